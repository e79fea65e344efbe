"""Drive N concurrent clients through turns and barge-ins and time them from outside.

One clock: every time here is `time.time()` on this machine. The end of the user's speech is
known from the audio sent (the clip's last sample of speech, placed by the microphone track's
`on_sent` wall time); the agent's first sound is the onset of energy in the audio pulled from
the client's receive path (after aiortc's jitter buffer), a frame counted as audible from the
moment it is pulled. The server's own stage times are relative to its estimate of the end of
speech, so they are aligned through relative values only, and the bench works against a
remote URL as well.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.audio import OUTPUT_RATE
from benchmarks import onset
from benchmarks.corpus import Utterance
from benchmarks.ear import Timeline, agent_onset_after, quiet_threshold
from benchmarks.peer import AgentClient, ClientEvent, close_clients
from benchmarks.playout import playout

log = logging.getLogger(__name__)

OFFSET_SETTINGS = onset.OnsetSettings(hangover_ms=400.0)
"""Falling silent at barge-in: 400 ms without sound (pauses between sentences are shorter
than the time the agent needs to answer the interruption)."""


class SessionLost(Exception):
    """The session stopped carrying audio: its remaining turns are not run."""


@dataclass(frozen=True)
class RunSettings:
    url: str
    turns: int = 10
    warmup: int = 1
    barge_ins: int = 2
    gap_s: float = 1.0
    """Silence between the end of the agent's reply and the user's next utterance."""
    turn_timeout_s: float = 60.0
    barge_in_after_s: float = 0.3
    """How long the user lets the agent speak before talking over it."""
    barge_in_attempts: int = 3
    """Tries per barge-in: a reply that ends before the user cuts in is asked again."""
    seed: int = 0
    token: str | None = None
    """The server's access token, when it has one."""
    mic_stall_s: float = 15.0
    """A clip not sent this long after its due time: the session is lost (a closed
    connection stops pulling the microphone's frames)."""


@dataclass
class TurnResult:
    sessions: int
    """Concurrent sessions in this run."""
    session: int
    kind: str
    """"warmup", "turn" or "barge_in"."""
    index: int
    utterance: str
    has_pause: bool
    status: str = "ok"
    sent_start: float | None = None
    speech_end: float | None = None
    """Wall time at which the user's speech ended leaving the client."""
    agent_onset: float | None = None
    """Wall time of the agent's first sound at the client's ear."""
    mouth_to_ear_ms: float | None = None
    server: dict[str, Any] = field(default_factory=dict)
    """The turn's `turn_metrics` event."""
    server_turns: int = 0
    """`transcript` events during the turn (more than 1: the server split the utterance)."""
    underruns: int | None = None
    """Frames of the reply that came later than a sound card would have wanted them."""
    concealed_ms: float | None = None
    """Time a sound card would have had nothing of the reply to play."""
    uplink_ms: float | None = None
    """Client send of the end of speech to the server's endpoint estimate (upper bound)."""
    downlink_ms: float | None = None
    """Server's first frame sent to the client's ear (derived)."""
    transport_ms: float | None = None
    """mouth_to_ear_ms - first_frame_sent_ms: everything the server's stages do not cover."""
    event_downlink_ms: float | None = None
    """Client ear onset minus the client's receipt of agent_speech_start."""
    barge_onset: float | None = None
    agent_silent: float | None = None
    barge_in_stop_ms: float | None = None
    """User's speech onset at the mouth to the agent falling silent at the ear."""
    interrupted: bool | None = None
    barge_in_detect_ms: float | None = None
    """User's speech onset at the mouth to the client's receipt of `interrupted`: the server's
    detection (barge-in threshold, uplink, VAD) plus the data channel's delivery."""
    attempts: int = 1
    events: list[tuple[float, str]] = field(default_factory=list)
    heard_user: str | None = None
    """The server's transcript of the user (the last one of the turn)."""
    reply: str | None = None
    """What the agent's LLM wrote for the turn (its `agent_text` deltas), for reading the
    words behind a figure: a real small model's reply may be long or off the point."""
    """(ms after the end of speech at the client, type) of every event of the turn."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SessionDriver:
    """One client talking to the agent: turns, warm-up turns and barge-ins."""

    def __init__(
        self,
        client: AgentClient,
        settings: RunSettings,
        session: int,
        sessions: int,
        on_turn: Callable[[TurnResult], None],
    ) -> None:
        self.client = client
        self.settings = settings
        self.session = session
        self.sessions = sessions
        self.on_turn = on_turn

    async def play(self, utterance: Utterance) -> tuple[float, float]:
        """Send a clip through the microphone; (start, end) wall times once it left."""
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[tuple[float, float]] = loop.create_future()

        def on_sent(start: float, end: float) -> None:
            if not sent.done():
                loop.call_soon_threadsafe(sent.set_result, (start, end))

        self.client.mic.play(utterance.pcm, utterance.rate, on_sent=on_sent)
        # The clip and whatever was queued before it, in real time, and a margin: a mic
        # that stopped (a closed connection stops pulling frames) must not hang the bench.
        limit = self.client.mic.queued_s + self.settings.mic_stall_s
        try:
            async with asyncio.timeout(limit):
                return await sent
        except TimeoutError:
            raise SessionLost(
                f"session {self.session}: the microphone sent nothing for {limit:.0f} s "
                f"(connection {self.client.pc.connectionState}; last events: "
                f"{[e.data.get('type') for e in self.client.events[-5:]]})"
            ) from None

    @staticmethod
    def speech_end_wall(utterance: Utterance, sent: tuple[float, float]) -> float:
        # Anchor at the end of the clip: it is the nearer one to the end of speech.
        return sent[1] - (utterance.duration_s - utterance.speech_end_s)

    async def wait_turn_done(self, since: int, timeout: float) -> dict[str, Any] | None:
        """The turn's turn_metrics (None on error or timeout)."""

        def done(event: dict[str, Any]) -> bool:
            return event.get("type") in ("turn_metrics", "error")

        try:
            event = await self.client.wait_for_event(done, timeout=timeout, since=since)
        except TimeoutError:
            return None
        return event if event.get("type") == "turn_metrics" else event | {"_error": True}

    async def settle(self) -> None:
        """Let the reply's last frames arrive, then the user pauses before talking again."""
        await asyncio.sleep(0.3 + self.settings.gap_s)

    async def turn(self, utterance: Utterance, kind: str, index: int) -> TurnResult:
        result = TurnResult(
            self.sessions, self.session, kind, index, utterance.name, utterance.has_pause
        )
        since = len(self.client.events)
        sent = await self.play(utterance)
        result.sent_start = sent[0]
        result.speech_end = speech_end = self.speech_end_wall(utterance, sent)
        metrics = await self.wait_turn_done(since, self.settings.turn_timeout_s)
        until = len(self.client.events)
        await asyncio.sleep(0.3)  # the last frames of the reply are still on their way
        events = self.client.events[since:until]
        result.events = [
            (round((e.received_at - speech_end) * 1000, 1), str(e.data.get("type"))) for e in events
        ]
        result.server_turns = sum(1 for e in events if e.data.get("type") == "transcript")
        if metrics is None:
            result.status = "timeout"
        elif metrics.get("_error"):
            result.status = f"error: {metrics.get('message')}"
        else:
            result.server = {k: v for k, v in metrics.items() if k != "type"}
            result.heard_user, result.reply = said_in(events, metrics.get("turn"))
        heard = agent_onset_after(self.client, sent[0], speech_end)
        result.agent_onset = heard
        if heard is not None:
            result.mouth_to_ear_ms = (heard - speech_end) * 1000
            reply = [t for t in self.client.received.arrival if heard <= t <= time.time()]
            played = playout(reply)
            result.underruns, result.concealed_ms = played.underruns, played.concealed_ms
        elif result.status == "ok":
            result.status = "no_audio"
        self.align(result, events)
        await asyncio.sleep(self.settings.gap_s)
        return result

    @staticmethod
    def align(result: TurnResult, events: Sequence[ClientEvent]) -> None:
        """Split the transport share with the events' receipt times (client clock only)."""
        server = result.server
        first_frame = server.get("first_frame_sent_ms")
        if result.mouth_to_ear_ms is None or first_frame is None or result.speech_end is None:
            return
        result.transport_ms = result.mouth_to_ear_ms - first_frame
        turn_id = server.get("turn")
        ends = [
            e
            for e in events
            if e.data.get("type") == "user_speech_end" and e.data.get("turn") == turn_id
        ]
        if ends:
            # The last end of speech before the turn's decision, as the server noticed it
            # `silence_ms` after the last voiced audio.
            last = ends[-1]
            server_end = last.received_at - float(last.data.get("silence_ms", 0.0)) / 1000
            result.uplink_ms = (server_end - result.speech_end) * 1000
            result.downlink_ms = result.transport_ms - result.uplink_ms
        starts = [
            e
            for e in events
            if e.data.get("type") == "agent_speech_start" and e.data.get("turn") == turn_id
        ]
        if starts and result.agent_onset is not None:
            result.event_downlink_ms = (result.agent_onset - starts[0].received_at) * 1000

    async def barge_in(self, first: Utterance, second: Utterance, index: int) -> TurnResult:
        """Ask something, and once the agent has spoken for `barge_in_after_s`, talk over it."""
        result = TurnResult(self.sessions, self.session, "barge_in", index, second.name, False)
        since = len(self.client.events)
        sent = await self.play(first)
        speech_end = self.speech_end_wall(first, sent)
        result.sent_start, result.speech_end = sent[0], speech_end
        deadline = time.time() + self.settings.turn_timeout_s
        heard: float | None = None
        while heard is None and time.time() < deadline:
            await asyncio.sleep(0.02)
            heard = agent_onset_after(self.client, sent[0], speech_end)
        if heard is None:
            result.status = "no_audio"
            await self.wait_turn_done(since, self.settings.turn_timeout_s)
            await self.settle()
            return result
        result.agent_onset = heard
        result.mouth_to_ear_ms = (heard - speech_end) * 1000
        await asyncio.sleep(max(0.0, heard + self.settings.barge_in_after_s - time.time()))
        barge_since = len(self.client.events)
        barge_sent = await self.play(second)
        result.barge_onset = barge_sent[0] + second.speech_start_s
        try:
            await self.client.wait_for_event("interrupted", timeout=5.0, since=barge_since)
            result.interrupted = True
            received = next(
                e.received_at
                for e in self.client.events[barge_since:]
                if e.data.get("type") == "interrupted"
            )
            result.barge_in_detect_ms = (received - result.barge_onset) * 1000
        except TimeoutError:
            result.interrupted = False
        # The barge-in is a turn of its own: let its reply play out before going on.
        await self.wait_turn_done(barge_since, self.settings.turn_timeout_s)
        await asyncio.sleep(0.3)
        result.events = [
            (round((e.received_at - speech_end) * 1000, 1), str(e.data.get("type")))
            for e in self.client.events[since:]
        ]
        timeline = Timeline(self.client.received, sent[0])
        threshold = quiet_threshold(timeline, sent[0], speech_end)
        start = timeline.index_at(heard)
        at = timeline.index_at(result.barge_onset) - start
        silent = onset.offset_after(
            timeline.pcm[start:], OUTPUT_RATE, at, OFFSET_SETTINGS, threshold=threshold
        )
        if not result.interrupted:
            result.status = "not_interrupted"
        elif silent is None or silent <= at:
            result.status = "agent_already_silent" if silent is not None else "never_silent"
        if silent is not None:
            result.agent_silent = timeline.wall(start + silent)
            result.barge_in_stop_ms = (result.agent_silent - result.barge_onset) * 1000
        await asyncio.sleep(self.settings.gap_s)
        return result

    async def run(self, corpus: Sequence[Utterance]) -> list[TurnResult]:
        rng = random.Random(self.settings.seed * 1000 + self.session)
        order = list(corpus)
        rng.shuffle(order)
        results: list[TurnResult] = []

        def record(result: TurnResult) -> None:
            results.append(result)
            self.on_turn(result)

        try:
            for i in range(self.settings.warmup):
                record(await self.turn(order[i % len(order)], "warmup", i))
            for i in range(self.settings.turns):
                record(await self.turn(order[(self.settings.warmup + i) % len(order)], "turn", i))
            pick = 0
            for i in range(self.settings.barge_ins):
                for attempt in range(1, self.settings.barge_in_attempts + 1):
                    first, second = order[pick % len(order)], order[(pick + 1) % len(order)]
                    pick += 2
                    result = await self.barge_in(first, second, i)
                    result.attempts = attempt
                    if result.status not in ("not_interrupted", "agent_already_silent"):
                        break
                record(result)
        except SessionLost as lost:
            # The rest of this session's turns cannot run; the other sessions go on, and
            # the report counts this one as lost (a turn of its own with the reason).
            log.error("%s", lost)
            lost_turn = TurnResult(self.sessions, self.session, "turn", len(results), "", False)
            lost_turn.status = "session_lost"
            record(lost_turn)
        return results


def said_in(events: Sequence[ClientEvent], turn_id: Any) -> tuple[str | None, str | None]:
    """The turn's last transcript and its reply text, from its events."""
    transcripts = [
        str(e.data.get("text"))
        for e in events
        if e.data.get("type") == "transcript" and e.data.get("turn") == turn_id
    ]
    deltas = [
        str(e.data.get("delta"))
        for e in events
        if e.data.get("type") == "agent_text" and e.data.get("turn") == turn_id
    ]
    return (transcripts[-1] if transcripts else None), ("".join(deltas) if deltas else None)


async def run_sessions(
    corpus: Sequence[Utterance],
    settings: RunSettings,
    sessions: int,
    on_turn: Callable[[TurnResult], None] = lambda _: None,
) -> list[TurnResult]:
    """`sessions` clients at once, each through warm-up, turns and barge-ins."""
    rng = random.Random(settings.seed)
    clients = [AgentClient(settings.url, token=settings.token) for _ in range(sessions)]

    async def one(index: int, client: AgentClient) -> list[TurnResult]:
        # Users do not start in step: spread the first utterances over one gap.
        await asyncio.sleep(rng.uniform(0, settings.gap_s) if index else 0.0)
        await client.connect()
        await client.wait_channel_open()
        await asyncio.sleep(0.5)  # media flowing both ways before the first word
        driver = SessionDriver(client, settings, index, sessions, on_turn)
        return await driver.run(corpus)

    try:
        per_session = await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    finally:
        await close_clients(clients)
    return [r for results in per_session for r in results]


async def fetch_health(url: str) -> dict[str, Any]:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url.rstrip('/')}/health", timeout=aiohttp.ClientTimeout(total=10)) as r,
        ):
            data: dict[str, Any] = await r.json()
            return data
    except Exception as exc:  # the bench still runs against a server without /health
        log.warning("GET %s/health failed: %s", url, exc)
        return {"error": str(exc)}


__all__ = [
    "RunSettings",
    "SessionDriver",
    "TurnResult",
    "fetch_health",
    "run_sessions",
]
