"""Drive one case over real WebRTC and record what happened, from the client's side only.

Each case gets a fresh session (no history from the case before). The bench client plays
the user's utterance as its microphone in real time; for the cases played over the agent it
waits for the agent's voice at its ear and plays the stimulus into it (or, for `echo`, feeds
the agent's voice back into its own microphone from the start). What it keeps is an
`Observation`: where the user's sound was at the mouth, where the agent's sound was at the
ear (segments of the received audio), and every event of the session, all in ms after the
start of the case's first clip leaving the client. `benchmarks.turns.score` labels it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from agent.audio import OUTPUT_RATE
from benchmarks import onset
from benchmarks.ear import Timeline, quiet_threshold
from benchmarks.peer import AgentClient
from benchmarks.runner import RunSettings, SessionDriver
from benchmarks.turns.corpus import Case
from benchmarks.turns.echo import EchoMicrophone
from benchmarks.turns.score import ANSWER_WITHIN_MS

EAR_SETTINGS = onset.OnsetSettings(hangover_ms=50.0)
"""Segments of the agent's sound at the ear: gaps of 50 ms or more split them, so a pause of
the agent's voice shows, and `score` merges them again where a longer silence matters."""


@dataclass(frozen=True)
class CaseTiming:
    answer_timeout_s: float = ANSWER_WITHIN_MS / 1000
    """After the end of a user turn: neither its transcript nor the agent's voice by then is
    a missed end of turn (the wait goes on for a late voice once the transcript came)."""
    reply_timeout_s: float = 30.0
    """Longest wait for a reply to finish (its `turn_metrics`)."""
    verdict_timeout_s: float = 3.0
    """After a stimulus ends: how long the server has to judge it (an `interrupted` event)."""
    observe_s: float = 1.5
    """After the verdict (or its timeout): the agent goes on, or stays silent."""
    echo_listen_s: float = 10.0
    """Longest an echo case listens to the reply fed back."""
    after_reply_s: float = 2.0
    """After the reply of an echo case: does its own echo make a user turn?"""
    attempts: int = 3
    """Tries of a case played over the agent whose reply ended before the stimulus began."""


RETRIED = frozenset({"reply_too_short", "no_reply"})


@dataclass
class Observation:
    case: dict[str, Any]
    status: str = "ok"
    """"ok", "no_reply" (the agent never answered the question before the stimulus),
    "reply_too_short" (it was silent again before the stimulus), "error: ..."."""
    attempts: int = 1
    started_at: float = 0.0
    """Wall time (this machine's clock) of the case's time 0."""
    speech_ms: tuple[float, float] = (0.0, 0.0)
    """The utterance's sound at the mouth: first and one past the last sample."""
    pauses_ms: list[tuple[float, float]] = field(default_factory=list)
    stimulus_ms: tuple[float, float] | None = None
    """The stimulus's sound at the mouth."""
    ear_ms: list[tuple[float, float]] = field(default_factory=list)
    """The agent's sound at the client's ear, as segments."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """Every event but pongs, with `t_ms`: when the client received it."""
    ended_ms: float = 0.0
    """When the client stopped watching."""
    fed_back_ms: float | None = None
    """Echo cases: how much of the agent's voice went back into the microphone."""
    direct_transcript: str | None = None
    """The scored audio transcribed by Whisper directly, no turn-taking (`baseline`)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CaseRun:
    """One attempt at one case over one fresh session."""

    def __init__(self, client: AgentClient, case: Case, timing: CaseTiming) -> None:
        self.client = client
        self.case = case
        self.timing = timing
        self.driver = SessionDriver(client, RunSettings(url=client.base_url), 0, 1, lambda _: None)
        self.t0 = 0.0
        self.speech_end = 0.0
        self.observation = Observation(case.label())

    def ms(self, wall: float) -> float:
        return round((wall - self.t0) * 1000, 1)

    async def run(self) -> Observation:
        case = self.case
        sent = await self.driver.play(case.utterance)
        self.t0 = sent[0]
        self.speech_end = self.driver.speech_end_wall(case.utterance, sent)
        obs = self.observation
        obs.started_at = self.t0
        obs.speech_ms = (case.utterance.speech_start_s * 1000, self.ms(self.speech_end))
        obs.pauses_ms = [(s * 1000, e * 1000) for s, e in case.pauses]
        since = len(self.client.events)
        if case.stimulus is None and case.echo is None:
            await self.answer(since)
        else:
            await self.over_the_agent(since)
        await asyncio.sleep(0.3)  # the last frames on their way
        self.collect()
        return obs

    async def wait(
        self, match: Callable[[dict[str, Any]], bool] | str, since: int, until: float
    ) -> dict[str, Any] | None:
        """The first event from index `since` matching `match`, or None at wall time `until`."""
        try:
            return await self.client.wait_for_event(
                match, timeout=max(0.01, until - time.time()), since=since
            )
        except TimeoutError:
            return None

    async def answer(self, since: int) -> None:
        """A user turn: wait for the agent to answer it, and for the answer to finish."""

        def voice(e: dict[str, Any]) -> bool:
            return e.get("type") in ("agent_speech_start", "error")

        until = self.speech_end + self.timing.answer_timeout_s
        started = await self.wait(voice, since, until)
        decided = any(e.data.get("type") == "transcript" for e in self.client.events[since:])
        if started is None and decided:  # the turn ended; its voice is late: how late?
            started = await self.wait(voice, since, time.time() + self.timing.reply_timeout_s)
        if started is None or started.get("type") == "error":
            return
        await self.wait(
            lambda e: (
                e.get("type") == "error"
                or (e.get("type") == "turn_metrics" and not e.get("interrupted"))
            ),
            since,
            time.time() + self.timing.reply_timeout_s,
        )

    async def agent_heard(self, since: int) -> tuple[float, int] | None:
        """Wall time of the agent's first sound at the ear after the end of speech, and the
        turn it answers; None when it does not answer in time."""
        started = await self.wait(
            "agent_speech_start", since, self.speech_end + self.timing.reply_timeout_s
        )
        if started is None:
            return None
        deadline = time.time() + 3.0
        while time.time() < deadline:
            heard = self.first_sound(self.speech_end)
            if heard is not None:
                return heard, int(started["turn"])
            await asyncio.sleep(0.02)
        return None

    def first_sound(self, after: float) -> float | None:
        timeline = Timeline(self.client.received, self.t0)
        threshold = self.threshold(timeline)
        start = timeline.index_at(after)
        found = onset.onset(timeline.pcm[start:], OUTPUT_RATE, threshold=threshold)
        return None if found is None else timeline.wall(start + found)

    def threshold(self, timeline: Timeline) -> float:
        """From the start of the user's first word: a fresh session's agent is silent then."""
        quiet_until = self.t0 + self.case.utterance.speech_start_s + 0.3
        return quiet_threshold(timeline, self.t0, quiet_until)

    async def over_the_agent(self, since: int) -> None:
        case, timing, obs = self.case, self.timing, self.observation
        heard = await self.agent_heard(since)
        if heard is None:
            obs.status = "no_reply"
            return
        agent_onset, turn = heard

        def reply_over(e: dict[str, Any]) -> bool:
            return e.get("turn") == turn and e.get("type") in ("agent_speech_end", "turn_metrics")

        if case.stimulus is None:  # echo: the whole reply comes back through the microphone
            over = await self.wait(reply_over, since, agent_onset + timing.echo_listen_s)
            if over is not None:
                await asyncio.sleep(timing.after_reply_s)
            return
        await asyncio.sleep(max(0.0, agent_onset + case.stimulus_after_s - time.time()))
        ended = next((e for e in self.client.events[since:] if reply_over(e.data)), None)
        if ended is not None:
            obs.status = "reply_too_short"
            return
        stimulus_since = len(self.client.events)
        sent = await self.driver.play(case.stimulus)
        stimulus = case.stimulus
        obs.stimulus_ms = (
            self.ms(sent[0] + stimulus.speech_start_s),
            self.ms(sent[0] + stimulus.speech_end_s),
        )
        verdict = await self.wait(
            lambda e: e.get("type") == "interrupted" and e.get("turn") == turn,
            stimulus_since,
            time.time() + timing.verdict_timeout_s,
        )
        if verdict is not None and not verdict.get("false_interruption"):
            # Stopped: the words over the agent are the user's next turn.
            await self.wait(
                lambda e: e.get("type") in ("transcript", "error") and e.get("turn", 0) > turn,
                stimulus_since,
                time.time() + timing.answer_timeout_s,
            )
        await asyncio.sleep(timing.observe_s)

    def collect(self) -> None:
        obs, client = self.observation, self.client
        obs.ended_ms = self.ms(time.time())
        obs.events = [
            {"t_ms": self.ms(e.received_at), **e.data}
            for e in client.events
            if e.data.get("type") != "pong"
        ]
        timeline = Timeline(client.received, self.t0)
        if timeline.pcm.size:
            threshold = self.threshold(timeline)
            start = timeline.index_at(self.t0)
            segments = onset.find_segments(
                timeline.pcm[start:], OUTPUT_RATE, EAR_SETTINGS, threshold
            )
            obs.ear_ms = [
                (self.ms(timeline.wall(start + s.start)), self.ms(timeline.wall(start + s.end)))
                for s in segments
            ]
        if isinstance(client.mic, EchoMicrophone):
            obs.fed_back_ms = round(client.mic.fed_back_samples / OUTPUT_RATE * 1000, 1)


async def run_case(
    url: str, case: Case, timing: CaseTiming = CaseTiming(), token: str | None = None
) -> Observation:
    """The case on a fresh session; again (up to `timing.attempts`) when the reply it is
    played over was missing or over too soon."""
    observation = Observation(case.label())
    for attempt in range(1, timing.attempts + 1):
        mic = EchoMicrophone(case.echo.delay_ms, case.echo.gain_db) if case.echo else None
        client = AgentClient(url, token=token, mic=mic)
        try:
            await client.connect()
            await client.wait_channel_open()
            await asyncio.sleep(0.5)  # media flowing both ways before the first word
            if mic is not None:
                mic.listen_to(client.received)
            observation = await CaseRun(client, case, timing).run()
        except (aiohttp.ClientError, ConnectionError, TimeoutError, OSError) as exc:
            observation.status = f"error: {type(exc).__name__}: {exc}"
        finally:
            await client.close()
        observation.attempts = attempt
        if observation.status not in RETRIED:
            break
    return observation


__all__ = ["CaseRun", "CaseTiming", "Observation", "run_case"]
