"""Session: one per peer connection. It owns the connection, drains the inbound audio into
16 kHz blocks for its audio sink, speaks through an AgentAudioTrack, talks JSON on the
"events" data channel, and closes itself when the client's keepalive pings stop, when
the user has been silent for the idle timeout, or at the maximum session length."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import av
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.audio import STT_RATE, Int16Array, MonoResampler
from agent.transport.lifetime import Lifetime
from agent.transport.playout import AgentAudioTrack
from agent.transport.rtc import close_peer, drain_channel

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "events"
CLOSING_DRAIN_S = 0.5
"""How long a closing session waits for the peer to acknowledge its last events (a browser
acknowledges within its 200 ms delayed-SACK timer; a vanished one never does)."""


class AudioSink(Protocol):
    """Receives the user's audio. `feed` is called on the event loop for every block and
    must return at once: heavy work belongs in the sink's own worker."""

    def feed(self, block: Int16Array, stream_samples: int) -> None: ...

    async def aclose(self) -> None: ...


SinkFactory = Callable[["Session"], AudioSink]


class Session:
    def __init__(
        self,
        session_id: str,
        pc: RTCPeerConnection,
        *,
        keepalive_timeout_s: float,
        idle_timeout_s: float = 0.0,
        max_session_s: float = 0.0,
        sink_factory: SinkFactory | None = None,
    ) -> None:
        self.id = session_id
        self.pc = pc
        self.output = AgentAudioTrack()
        self.created_at = time.time()
        self.close_reason: str | None = None
        self.close_reconnect = True
        """Sent with "closing": whether the client should connect again by itself."""
        self.stream_samples = 0
        """16 kHz samples received from the user so far: the session's stream clock."""
        self._keepalive_timeout_s = keepalive_timeout_s
        self._lifetime = Lifetime(idle_timeout_s, max_session_s)
        self._sink_factory = sink_factory
        self._sink: AudioSink | None = None
        self._channel: RTCDataChannel | None = None
        self._channel_open = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_requested = asyncio.Event()
        self._closed = asyncio.Event()
        self._last_ping = time.monotonic()
        self._message_handlers: dict[str, Callable[[Mapping[str, Any]], None]] = {}

        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Called once the answer is set: start the keepalive watchdog and the sink."""
        self._last_ping = time.monotonic()
        self._lifetime.start(self._last_ping)
        if self._sink_factory is not None:
            self._sink = self._sink_factory(self)
        self._spawn(self._watchdog(), "watchdog")

    def request_close(self, reason: str, *, reconnect: bool = True) -> None:
        """Ask the session's supervisor to close it; safe from any callback or task.
        `reconnect=False` tells the client not to start a new session by itself."""
        if self.close_reason is None:
            self.close_reason = reason
            self.close_reconnect = reconnect
        self._close_requested.set()

    async def wait_close_requested(self) -> None:
        await self._close_requested.wait()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def sink(self) -> AudioSink | None:
        return self._sink

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def aclose(self) -> None:
        """Cancel and await every task, close the sink and the peer connection. Idempotent."""
        if self._closed.is_set():
            return
        self.request_close(self.close_reason or "closed")
        await self._await_channel_for_goodbye()
        self.send_event(
            {"type": "closing", "reason": self.close_reason, "reconnect": self.close_reconnect}
        )
        try:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._sink is not None:
                try:
                    await self._sink.aclose()
                except Exception:
                    log.exception("session %s: closing the audio sink failed", self.id)
            self.output.stop()
            await drain_channel(self._channel, CLOSING_DRAIN_S)
            await close_peer(self.pc)
        finally:
            self._closed.set()
            log.info("session %s closed: %s", self.id, self.close_reason)

    async def _await_channel_for_goodbye(self) -> None:
        """A peer opens its events channel moments after ICE finds it (DTLS, the SCTP
        association and the channel's open handshake follow): a session closed in that gap
        would drop its `closing` event, and the page would report a broken connection
        instead of the reason. So wait for the channel, briefly, when it is on its way: the
        offer asked for one, and a peer answered ICE's checks (an offer whose sender never
        connects, a fuzzed one or a vanished browser, closes without waiting)."""
        if self._channel_open.is_set() or self.pc.sctp is None:
            return
        if self.pc.connectionState in ("failed", "closed"):
            return
        if self.pc.iceConnectionState not in ("connected", "completed"):
            return
        try:
            await asyncio.wait_for(self._channel_open.wait(), CLOSING_DRAIN_S)
        except TimeoutError:
            log.debug("session %s: events channel never opened; closing without goodbye", self.id)

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            coro, name=f"session-{self.id}-{name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "session %s: task %s failed", self.id, task.get_name(), exc_info=task.exception()
            )
            self.request_close(f"internal error in {task.get_name()}")

    # -- peer connection callbacks ------------------------------------------------------

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.debug("session %s: connection %s", self.id, state)
        # A peer that vanishes is noticed by ICE consent checks and ends as "closed".
        if state in ("failed", "closed"):
            self.request_close(f"connection {state}")

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self._close_requested.is_set():
            self._spawn(self._drain(track), "drain")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL:
            return
        self._channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._channel_open.set()
        else:
            channel.on("open", self._channel_open.set)

    # -- inbound audio --------------------------------------------------------------------

    async def _drain(self, track: MediaStreamTrack) -> None:
        """Pull every frame as it arrives: aiortc queues inbound frames without bound."""
        resampler = MonoResampler(STT_RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            block = resampler.resample_frame(frame)
            if block.size == 0:
                continue
            self.stream_samples += int(block.size)
            if self._sink is not None:
                self._sink.feed(block, self.stream_samples)

    # -- events channel -----------------------------------------------------------------

    def on_message_type(self, type_: str, handler: Callable[[Mapping[str, Any]], None]) -> None:
        self._message_handlers[type_] = handler

    def send_event(self, event: Mapping[str, Any]) -> None:
        # Every sink reports the user's speech through here, so this one hook keeps the
        # idle timeout honest whatever the sink, even while the channel is down.
        kind = event.get("type")
        if kind == "user_speech_start":
            self._lifetime.speech_started(time.monotonic())
        elif kind == "user_speech_end":
            self._lifetime.speech_ended(time.monotonic())
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        try:
            channel.send(json.dumps(event, separators=(",", ":")))
        except Exception:  # the transport may be tearing down under us
            log.debug("session %s: dropped event %s", self.id, event.get("type"))

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except (TypeError, ValueError):
            self.send_event({"type": "error", "message": "events must be JSON objects"})
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.send_event({"type": "error", "message": "events need a string 'type'"})
            return
        kind = event["type"]
        if kind == "ping":
            self._last_ping = time.monotonic()
            self.send_event({"type": "pong", "t": event.get("t")})
            return
        handler = self._message_handlers.get(kind)
        if handler is None:
            self.send_event({"type": "error", "message": f"unknown event type {kind!r}"})
            return
        handler(event)

    async def _watchdog(self) -> None:
        """Close the session when the client stops pinging, when the user has been silent
        for the idle timeout, or when it reaches its maximum length."""
        period = min(1.0, self._keepalive_timeout_s / 4, self._lifetime.check_period_s)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            silent_for = now - self._last_ping
            if silent_for > self._keepalive_timeout_s:
                self.request_close(f"no keepalive for {silent_for:.1f} s")
                return
            expired = self._lifetime.expired(now)
            if expired is not None:
                # The client is alive but the session is over: it must not reconnect on
                # its own, or the limits would mean nothing.
                self.request_close(expired, reconnect=False)
                return
