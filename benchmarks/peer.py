"""A headless WebRTC client that behaves like the browser page: it opens the "events" data
channel before its offer, pings every second, sends a microphone track and records what the
agent says. The bench and the tests both drive the server through it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.audio import OUTPUT_RATE, Int16Array, MonoResampler, pcm_to_frame
from agent.transport.rtc import close_peer, set_inbound_audio_buffering

log = logging.getLogger(__name__)

MIC_RATE = 48_000
MIC_FRAME = MIC_RATE // 50


class MicrophoneTrack(MediaStreamTrack):
    """Plays queued PCM in real time (20 ms frames at 48 kHz), silence otherwise, and notes
    the wall time at which each queued clip starts and ends leaving the client."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[tuple[Int16Array, Callable[[float, float], None] | None]] = []
        self._current: Int16Array | None = None
        self._offset = 0
        self._on_sent: Callable[[float, float], None] | None = None
        self._clip_started = 0.0
        self._pts = 0
        self._start: float | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def play(
        self,
        pcm: Int16Array,
        sample_rate: int,
        on_sent: Callable[[float, float], None] | None = None,
    ) -> None:
        """Queue a clip; `on_sent(start_wall, end_wall)` is called once its last sample left."""
        resampler = MonoResampler(MIC_RATE)
        audio = np.concatenate([resampler.resample_pcm(pcm, sample_rate), resampler.flush()])
        self._pending.append((audio, on_sent))
        self._idle.clear()

    @property
    def queued_s(self) -> float:
        """Seconds of audio still to send (the clip being sent and those queued after it)."""
        current = 0 if self._current is None else self._current.size - self._offset
        return (current + sum(pcm.size for pcm, _ in self._pending)) / MIC_RATE

    async def wait_sent(self) -> None:
        await self._idle.wait()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._pts / MIC_RATE
        if due > now:
            await asyncio.sleep(due - now)
        out = np.zeros(MIC_FRAME, dtype=np.int16)
        filled = 0
        while filled < MIC_FRAME:
            if self._current is None:
                if not self._pending:
                    break
                self._current, self._on_sent = self._pending.pop(0)
                self._offset = 0
                self._clip_started = time.time() + filled / MIC_RATE
            n = min(MIC_FRAME - filled, self._current.size - self._offset)
            out[filled : filled + n] = self._current[self._offset : self._offset + n]
            filled += n
            self._offset += n
            if self._offset >= self._current.size:
                if self._on_sent is not None:
                    self._on_sent(self._clip_started, time.time() + filled / MIC_RATE)
                self._current, self._on_sent = None, None
        if self._current is None and not self._pending:
            self._idle.set()
        frame = pcm_to_frame(out, MIC_RATE, pts=self._pts)
        self._pts += MIC_FRAME
        return frame


@dataclass
class ReceivedAudio:
    """The agent's audio as it leaves this client's receive path, 48 kHz mono, with the wall
    time at which each frame was pulled from aiortc's jitter buffer."""

    chunks: list[Int16Array] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)
    first_arrival: float | None = None

    def append(self, pcm: Int16Array, when: float) -> None:
        if self.first_arrival is None:
            self.first_arrival = when - pcm.size / OUTPUT_RATE
        self.chunks.append(pcm)
        self.arrival.append(when)

    def samples(self) -> Int16Array:
        if not self.chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.chunks)


@dataclass
class ClientEvent:
    received_at: float
    data: dict[str, Any]


async def offer_sdp() -> str:
    """An offer as a browser page makes it (an events channel and a two-way audio section),
    from a peer connection closed at once: for requests that never connect."""
    pc = RTCPeerConnection()
    pc.createDataChannel("events")
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


class AgentClient:
    """One connection to a voice-agent server, driven like the web page drives it."""

    def __init__(
        self,
        base_url: str,
        *,
        ping_interval_s: float = 1.0,
        token: str | None = None,
        jitter_frames: int | None = 1,
        mic: MicrophoneTrack | None = None,
    ) -> None:
        """`jitter_frames`: 20 ms frames the receive path's jitter buffer holds before the
        ear gets one (None: aiortc's own 4); the bench counts what that costs in underruns.
        `mic`: the track to send (a plain `MicrophoneTrack` unless given)."""
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
        """Sent with the offer and the DELETE, as the page sends its `?token=`."""
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = mic if mic is not None else MicrophoneTrack()
        self.received = ReceivedAudio()
        self.events: list[ClientEvent] = []
        self.session_id: str | None = None
        self.pinging = True
        self._ping_interval_s = ping_interval_s
        self._channel = self.pc.createDataChannel("events")
        self._channel.on("message", self._on_message)
        self._new_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.addTrack(self.mic)
        if jitter_frames is not None:
            set_inbound_audio_buffering(self.pc, jitter_frames)
        self.pc.on("track", self._on_track)

    async def connect(self, session: aiohttp.ClientSession | None = None) -> dict[str, Any]:
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        payload = {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}
        owns = session is None
        http = session or aiohttp.ClientSession()
        try:
            url = f"{self.base_url}/offer"
            async with http.post(url, json=payload, headers=self._auth) as response:
                body: dict[str, Any] = await response.json()
                if response.status != 200:
                    raise ConnectionRefusedError(f"{response.status}: {body.get('error')}")
        finally:
            if owns:
                await http.close()
        self.session_id = body["session_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))
        self._tasks.append(asyncio.get_running_loop().create_task(self._ping_loop()))
        return body

    async def wait_channel_open(self, timeout: float = 10.0) -> None:
        if self._channel.readyState == "open":
            return
        opened = asyncio.Event()
        self._channel.once("open", opened.set)
        async with asyncio.timeout(timeout):
            await opened.wait()

    def send(self, event: dict[str, Any]) -> None:
        if self._channel.readyState == "open":
            self._channel.send(json.dumps(event))

    async def wait_for_event(
        self,
        predicate: Callable[[dict[str, Any]], bool] | str,
        timeout: float = 30.0,
        since: int | None = None,
    ) -> dict[str, Any]:
        """First event matching `predicate` (or of that type) among those received after
        index `since` (default: from now on)."""
        match = (lambda e: e.get("type") == predicate) if isinstance(predicate, str) else predicate
        start = len(self.events) if since is None else since
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[start:]:
                    if match(event.data):
                        return event.data
                start = len(self.events)
                self._new_event.clear()
                await self._new_event.wait()

    async def close(self, *, hang_up: bool = True) -> None:
        """Hang up as the page does (DELETE the session, then close the connection); with
        `hang_up=False` only the peer connection closes, as when a tab is killed."""
        if hang_up and self.session_id is not None and self.pc.connectionState != "closed":
            url = f"{self.base_url}/sessions/{self.session_id}"
            timeout = aiohttp.ClientTimeout(total=5)
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.delete(url, headers=self._auth, timeout=timeout) as response,
                ):
                    if response.status not in (204, 404):  # 404: the server closed it first
                        log.warning("DELETE %s: %s %s", url, response.status, response.reason)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The server may be gone already; closing the connection is enough.
                log.info("DELETE %s failed: %s", url, exc or type(exc).__name__)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.mic.stop()
        await close_peer(self.pc)

    def _on_message(self, message: str | bytes) -> None:
        data = json.loads(message)
        self.events.append(ClientEvent(time.time(), data))
        self._new_event.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.get_running_loop().create_task(self._record(track)))

    async def _record(self, track: MediaStreamTrack) -> None:
        resampler = MonoResampler(OUTPUT_RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            self.received.append(resampler.resample_frame(frame), time.time())

    async def _ping_loop(self) -> None:
        while True:
            if self.pinging:
                self.send({"type": "ping", "t": time.time()})
            await asyncio.sleep(self._ping_interval_s)


async def close_clients(clients: Sequence[AgentClient]) -> None:
    """Close every client, each whatever the others do; a failure is logged, not raised."""
    results = await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    for client, result in zip(clients, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("closing the client of session %s failed: %r", client.session_id, result)


__all__ = ["AgentClient", "ClientEvent", "MicrophoneTrack", "ReceivedAudio", "close_clients"]
