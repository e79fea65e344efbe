"""The control logic of stage faults with scripted fakes: failed turns counted towards
--max-failed-turns (and what does not count), stages stalled past --stage-timeout, stuck
worker threads abandoned rather than awaited. The same faults in the real models, behind a
real client, are in tests/test_faults.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pytest
import pytest_asyncio

from agent.audio import STT_RATE, Int16Array
from agent.config import ConversationConfig
from agent.dialogue.conversation import Conversation
from agent.dialogue.listening import Listening
from agent.dialogue.turn import TurnDeps
from agent.stages.deadlines import StageRunner
from agent.stages.stt import Transcript
from agent.threads import run_in
from agent.turntaking.vad import SpeechEnded, SpeechStarted, TurnEvent, TurnSegmenter, VadSettings
from tests.fakes import EventLog, RecordingTrack, ScriptedChat, ScriptedTranscriber, ToneSynthesizer


class NoVad:
    """Turns are scripted through `Conversation.handle`; no audio is fed."""

    segmenter = TurnSegmenter(VadSettings())

    def feed(self, block: Int16Array, wall_time: float) -> list[TurnEvent]:
        return []


@dataclass
class Blocker:
    """Blocks the first call's worker thread until released: a call that cannot be cancelled."""

    release: threading.Event
    hanging: threading.Event
    returned: threading.Event
    calls: int = 0

    @classmethod
    def create(cls) -> Blocker:
        return cls(threading.Event(), threading.Event(), threading.Event())

    def maybe_block(self) -> None:
        self.calls += 1
        if self.calls == 1:
            self.hanging.set()
            self.release.wait(10)
            self.returned.set()


class BlockingTranscriber:
    def __init__(self, executor: ThreadPoolExecutor, blocker: Blocker) -> None:
        self._executor = executor
        self.blocker = blocker

    async def transcribe(self, audio: Int16Array) -> Transcript:
        return await run_in(self._executor, self._blocking, audio)

    def _blocking(self, audio: Int16Array) -> Transcript:
        self.blocker.maybe_block()
        return Transcript("Hello there", "en", audio.size / STT_RATE)


class BlockingSynthesizer(ToneSynthesizer):
    def __init__(self, blocker: Blocker) -> None:
        super().__init__()
        self.blocker = blocker

    def synthesize(self, text: str, *, urgent: bool = False) -> Int16Array:
        self.blocker.maybe_block()
        return super().synthesize(text, urgent=urgent)


class Talk:
    """One Conversation over scripted stages; `turn()` plays one user utterance."""

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        config: ConversationConfig,
        *,
        transcriber: Any = None,
        chat: ScriptedChat | None = None,
        tts: Any = None,
    ) -> None:
        self.log = EventLog()
        self.fatal: list[str] = []
        self.chat = chat or ScriptedChat(reply="Yes, sure.")
        self.transcriber = transcriber or ScriptedTranscriber(["Hello there"] * 20)
        deps = TurnDeps(
            transcriber=self.transcriber,
            chat=self.chat,
            tts=tts or ToneSynthesizer(),
            tts_executor=executor,
            track=cast(Any, RecordingTrack()),
            emit=self.log,
        )
        self.conversation = Conversation(
            config=config,
            listening=Listening(NoVad(), executor),
            deps=deps,
            on_fatal=self.fatal.append,
        )

    async def speak(self) -> int:
        """Start a user turn; returns the index of its first event in the log."""
        since = len(self.log.events)
        audio = np.full(STT_RATE, 1000, dtype=np.int16)
        await self.conversation.handle(SpeechStarted(0, 1600, 0.0))
        await self.conversation.handle(
            SpeechEnded(audio, 0, 0, audio.size, audio.size + 4800, time.time(), False, 600)
        )
        return since

    async def turn(
        self, timeout: float = 5.0, ends_with: tuple[str, ...] = ("error", "turn_metrics")
    ) -> list[str]:
        """One whole turn; returns the types of the events it produced. A turn is over once
        no reply runs and one of `ends_with` was sent (a held reply that failed ends its
        task before its release reports the error)."""
        since = await self.speak()

        def over() -> bool:
            sent = [e["type"] for e in self.log.events[since:]]
            return not self.conversation.busy and (
                not ends_with or any(t in ends_with for t in sent)
            )

        async with asyncio.timeout(timeout):
            while not over():
                await asyncio.sleep(0.005)
        return [e["type"] for e in self.log.events[since:]]


@pytest.fixture
def executor() -> Any:
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=True)


@pytest_asyncio.fixture
async def talks() -> AsyncIterator[list[Talk]]:
    made: list[Talk] = []
    yield made
    for talk in made:
        await talk.conversation.aclose()


async def test_failed_turns_in_a_row_close_the_session_and_a_reply_resets_the_count(
    executor: ThreadPoolExecutor, talks: list[Talk]
) -> None:
    talk = Talk(executor, ConversationConfig(max_failed_turns=3))
    talks.append(talk)
    talk.chat.fail = RuntimeError("llama exploded")
    assert "error" in await talk.turn()
    assert "error" in await talk.turn()
    talk.chat.fail = None
    assert "turn_metrics" in await talk.turn()  # a reply: the count starts again
    talk.chat.fail = RuntimeError("llama exploded")
    assert "error" in await talk.turn()
    assert "error" in await talk.turn()
    assert talk.fatal == []
    assert "error" in await talk.turn()
    (reason,) = talk.fatal
    assert reason.startswith("3 turns in a row failed") and "llama exploded" in reason
    assert len(talk.log.of("error")) == 5


async def test_no_speech_and_barge_in_are_not_failed_turns(
    executor: ThreadPoolExecutor, talks: list[Talk]
) -> None:
    transcriber = ScriptedTranscriber(["one", "", "three", "four"])
    talk = Talk(executor, ConversationConfig(max_failed_turns=2), transcriber=transcriber)
    talks.append(talk)
    talk.chat.fail = RuntimeError("llama exploded")
    assert "error" in await talk.turn()
    no_speech = await talk.turn(ends_with=())
    assert no_speech == ["user_speech_start", "user_speech_end"]
    talk.chat.fail, talk.chat.first_token_delay_s = None, 1.0
    await talk.speak()
    await asyncio.sleep(0.05)
    await talk.conversation.handle(SpeechStarted(0, 1600, 0.0))  # the user goes on
    assert talk.log.of("interrupted")
    # The cancel lands in the background (the listener does not wait for the model).
    async with asyncio.timeout(2):
        while talk.chat.cancelled != 1:
            await asyncio.sleep(0.005)
    assert talk.fatal == []  # one failure, then two turns that neither fail nor reset
    talk.chat.fail, talk.chat.first_token_delay_s = RuntimeError("again"), 0.01
    assert "error" in await talk.turn()
    assert len(talk.fatal) == 1 and "again" in talk.fatal[0]


async def test_an_llm_that_stops_producing_tokens_fails_at_the_stage_timeout(
    executor: ThreadPoolExecutor, talks: list[Talk]
) -> None:
    talk = Talk(executor, ConversationConfig(stage_timeout_s=0.3))
    talks.append(talk)
    talk.chat.first_token_delay_s = 30
    started = time.monotonic()
    assert "error" in await talk.turn()
    elapsed = time.monotonic() - started
    (error,) = talk.log.of("error")
    assert error["message"] == "language model failed: StageTimeout: no token for 0.3 s"
    assert 0.3 <= elapsed < 1.0, elapsed
    assert talk.chat.cancelled == 1  # the generation was told to stop
    # A slow but steady stream never stalls: 7 tokens 0.2 s apart take 1.4 s > 0.3 s.
    talk.chat.first_token_delay_s, talk.chat.token_delay_s = 0.2, 0.2
    talk.chat.reply = "One two three four five six seven."
    assert "turn_metrics" in await talk.turn()
    assert len(talk.log.of("error")) == 1


@pytest.mark.parametrize("stage", ["stt", "tts"])
async def test_a_stuck_worker_thread_fails_the_turn_and_is_not_waited_for(
    executor: ThreadPoolExecutor, talks: list[Talk], stage: str
) -> None:
    blocker = Blocker.create()
    fakes: dict[str, Any] = (
        {"transcriber": BlockingTranscriber(executor, blocker)}
        if stage == "stt"
        else {"tts": BlockingSynthesizer(blocker)}
    )
    talk = Talk(executor, ConversationConfig(stage_timeout_s=0.3), **fakes)
    talks.append(talk)
    try:
        started = time.monotonic()
        assert "error" in await talk.turn()
        # The worker hangs until released below: the turn ended without it (the bound is
        # only generous headroom over the 0.3 s deadline on a busy machine).
        assert time.monotonic() - started < 5.0
        assert blocker.hanging.is_set() and not blocker.returned.is_set()
        (error,) = talk.log.of("error")
        name = "speech recognition" if stage == "stt" else "speech synthesis"
        assert error["message"] == f"{name} failed: StageTimeout: no result for 0.3 s"
        assert talk.conversation.abandoned_stages == 1
    finally:
        blocker.release.set()
    async with asyncio.timeout(5):
        while talk.conversation.abandoned_stages:
            await asyncio.sleep(0.01)
    assert blocker.returned.is_set()
    assert "turn_metrics" in await talk.turn()  # its late result was dropped; the next counts


async def test_a_cancelled_stage_still_waits_for_a_healthy_worker(
    executor: ThreadPoolExecutor,
) -> None:
    """Barge-in: the caller's cancel returns only once the worker is done with its model."""
    runner = StageRunner(timeout_s=5.0)
    finished = threading.Event()

    def work() -> None:
        time.sleep(0.2)
        finished.set()

    task = asyncio.create_task(runner.run(run_in(executor, work), name="work"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set() and runner.abandoned == 0
