"""The turn state machine with timeline-scripted fakes: barge-in, quick utterances, maximum
length, mid-sentence pauses, failures. The real-model version is tests/test_conversation_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pytest
import pytest_asyncio

from agent.audio import Int16Array
from agent.config import ConversationConfig
from agent.dialogue.conversation import Conversation
from agent.dialogue.turn import TurnDeps
from agent.metrics import Metrics
from agent.turntaking.vad import SpeechEnded, SpeechStarted, TurnSegmenter, VadSettings
from tests.fakes import EventLog, RecordingTrack, ScriptedChat, ScriptedTranscriber, ToneSynthesizer

WINDOW = 512


class ScriptedVad:
    """The real TurnSegmenter, fed a scripted speech probability per 512-sample window."""

    def __init__(self, settings: VadSettings, probabilities: list[float]) -> None:
        self.segmenter = TurnSegmenter(settings)
        self._probabilities = probabilities
        self._pending = np.zeros(0, dtype=np.int16)

    @property
    def speech_ms(self) -> float:
        return self.segmenter.speech_ms

    def feed(self, block: Int16Array, wall_time: float) -> list[Any]:
        self._pending = np.concatenate([self._pending, block])
        out = []
        while self._pending.size >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            p = self._probabilities.pop(0) if self._probabilities else 0.0
            out.extend(self.segmenter.push(window, p, wall_time))
        return out


class Harness:
    def __init__(self, config: ConversationConfig, vad: Any, executor: ThreadPoolExecutor):
        self.log = EventLog()
        self.track = RecordingTrack()
        self.transcriber = ScriptedTranscriber(["Hello there"])
        self.chat = ScriptedChat()
        self.tts = ToneSynthesizer()
        self.metrics = Metrics()
        deps = TurnDeps(
            transcriber=self.transcriber,
            chat=self.chat,
            tts=self.tts,
            tts_executor=executor,
            track=cast(Any, self.track),
            emit=self.log,
        )
        self.conversation = Conversation(
            config=config, vad=vad, vad_executor=executor, deps=deps, metrics=self.metrics
        )

    async def utterance(self, n: int = 1, *, speech_ms: float = 600) -> None:
        """Script the VAD's decisions for one user utterance."""
        await self.conversation.handle(SpeechStarted(0, 1600, 0.0))
        audio = np.full(16_000 * n, 1000, dtype=np.int16)
        import time

        await self.conversation.handle(
            SpeechEnded(audio, 0, 0, audio.size, audio.size + 4800, time.time(), False, speech_ms)
        )

    async def turn_done(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.conversation.busy:
                await asyncio.sleep(0.005)


@pytest.fixture
def executor() -> Any:
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=True)


@pytest_asyncio.fixture
async def harness(executor: ThreadPoolExecutor) -> AsyncIterator[Harness]:
    h = Harness(ConversationConfig(), ScriptedVad(VadSettings(), []), executor)
    yield h
    await h.conversation.aclose()


def feed_script(h: Harness, script: list[float]) -> None:
    """Audio for every scripted window, fed in 20 ms blocks as a session feeds it."""
    audio = np.zeros(WINDOW * len(script), dtype=np.int16)
    for block in np.array_split(audio, len(script) * WINDOW // 320):
        h.conversation.feed(block, 0)


def stage_values(metrics: dict[str, Any]) -> list[float]:
    stages = ("endpoint_ms", "stt_done_ms", "llm_first_token_ms", "first_chunk_ms",
              "tts_first_audio_ms", "first_frame_sent_ms")  # fmt: skip
    return [metrics[s] for s in stages]


async def test_a_turn_emits_events_in_order_with_monotonic_metrics(harness: Harness) -> None:
    await harness.utterance()
    await harness.turn_done()
    types = harness.log.types()
    assert types[:3] == ["user_speech_start", "user_speech_end", "transcript"]
    assert types.index("agent_text") < types.index("agent_speech_start")
    assert types[-2:] == ["agent_speech_end", "turn_metrics"]
    values = stage_values(harness.log.of("turn_metrics")[0])
    assert all(v is not None and v >= 0 for v in values)
    assert values == sorted(values), values  # each stage ends after the one before
    assert harness.conversation.history.messages[1:] == [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Sure, I can help with that. It is sunny today."},
    ]
    assert harness.tts.texts[0] == "Sure, I can help with that."


async def test_short_speech_while_thinking_does_not_interrupt(harness: Harness) -> None:
    harness.chat.first_token_delay_s = 0.2
    await harness.utterance()
    await asyncio.sleep(0.05)
    await harness.conversation.check_barge_in(120)  # under barge_in_ms
    await harness.utterance(speech_ms=120)  # the blip ends: ignored while the agent is busy
    await harness.turn_done()
    assert not harness.log.of("interrupted")
    assert len(harness.log.of("turn_metrics")) == 1
    assert len(harness.transcriber.calls) == 1


async def test_speech_while_thinking_interrupts_and_merges_the_user_turns(
    harness: Harness,
) -> None:
    harness.transcriber.texts = ["What is", "the weather"]
    harness.chat.first_token_delay_s = 0.3
    await harness.utterance()
    await asyncio.sleep(0.08)  # transcribed, waiting for the LLM
    await harness.conversation.check_barge_in(250)
    assert harness.chat.cancelled == 1
    (interrupted,) = harness.log.of("interrupted")
    assert interrupted["heard"] == "" and not interrupted["false_interruption"]
    harness.chat.first_token_delay_s = 0.01
    await harness.utterance()
    await harness.turn_done()
    last_prompt = harness.chat.prompts[-1]
    assert last_prompt[-1] == {"role": "user", "content": "What is the weather"}


async def test_two_quick_utterances_before_transcription_are_transcribed_together(
    harness: Harness,
) -> None:
    harness.transcriber.delay_s = 0.3
    harness.transcriber.texts = ["never used", "Two utterances as one"]
    await harness.utterance(1)
    await asyncio.sleep(0.05)
    await harness.conversation.check_barge_in(300)
    await harness.utterance(2)
    await harness.turn_done()
    first, second = harness.transcriber.calls
    assert second.size > first.size + 2 * 16_000  # the first utterance was carried over
    assert harness.log.of("transcript")[-1]["text"] == "Two utterances as one"


async def test_barge_in_while_speaking_cuts_history_to_what_was_heard(harness: Harness) -> None:
    harness.chat.reply = "One two three four five six seven eight nine ten. Eleven twelve."
    await harness.utterance()
    async with asyncio.timeout(5):
        while not harness.track.writes:
            await asyncio.sleep(0.005)
    harness.track.advance(0.0)
    first_chunk = harness.track.writes[0]
    harness.track.sent = first_chunk // 2  # half of the first chunk reached the user
    await harness.conversation.check_barge_in(300)
    (interrupted,) = harness.log.of("interrupted")
    heard = interrupted["heard"]
    assert heard and "One two three four five six seven eight nine ten".startswith(heard)
    assert harness.conversation.history.messages[-1] == {"role": "assistant", "content": heard}
    assert harness.track.cleared[0] == first_chunk // 2
    assert not harness.conversation.busy


async def test_false_interruption_is_reported(harness: Harness) -> None:
    harness.transcriber.texts = ["Hello", ""]
    harness.chat.first_token_delay_s = 0.5
    await harness.utterance()
    await asyncio.sleep(0.05)
    await harness.conversation.check_barge_in(250)
    await harness.utterance(speech_ms=250)  # a cough: Whisper finds no words
    await harness.turn_done()
    flags = [e["false_interruption"] for e in harness.log.of("interrupted")]
    assert flags == [False, True]


async def test_speech_past_the_maximum_length_is_ended_by_force_and_answered(
    executor: ThreadPoolExecutor,
) -> None:
    """Speech that never pauses: the real segmenter ends the utterance at max_utterance_s,
    says it was forced, and the turn is answered."""
    settings = replace(VadSettings(), max_utterance_s=1.0)
    voiced = 1 + int(settings.max_utterance_s * 16_000 // WINDOW)  # one window past it
    script = [0.05] * 5 + [0.9] * voiced + [0.05] * 20
    h = Harness(ConversationConfig(), ScriptedVad(settings, script), executor)
    h.chat.reply = "Yes."
    try:
        feed_script(h, script)
        async with asyncio.timeout(5):
            while not h.log.of("turn_metrics"):
                await asyncio.sleep(0.01)
        (end,) = h.log.of("user_speech_end")
        assert end["forced"] is True
        assert end["speech_ms"] == pytest.approx(1000, abs=WINDOW / 16)  # within one window
    finally:
        await h.conversation.aclose()


async def test_model_failure_reports_an_error_and_keeps_listening(harness: Harness) -> None:
    harness.transcriber.texts = ["first", "second"]
    harness.chat.fail = RuntimeError("llama exploded")
    await harness.utterance()
    await harness.turn_done()
    (error,) = harness.log.of("error")
    assert "llama exploded" in error["message"]
    harness.chat.fail = None
    await harness.utterance()
    await harness.turn_done()
    assert len(harness.log.of("turn_metrics")) == 1
    assert harness.metrics.errors._value.get() == 1


@pytest.mark.parametrize("pause_windows", [6, 14])
async def test_mid_sentence_pause_shorter_than_endpoint_keeps_one_turn(
    executor: ThreadPoolExecutor, pause_windows: int
) -> None:
    """A comma pause (6 windows = 192 ms) stays one turn; a pause past the endpoint
    (14 windows = 448 ms > 300 ms) makes two."""
    script = [0.05] * 10 + [0.9] * 20 + [0.05] * pause_windows + [0.9] * 20 + [0.05] * 40
    settings = replace(VadSettings(), endpoint_ms=300)
    h = Harness(ConversationConfig(), ScriptedVad(settings, script), executor)
    h.transcriber.texts = ["Hello, can you hear me", "second half"]
    h.chat.reply = "Yes."
    try:
        feed_script(h, script)
        async with asyncio.timeout(5):
            while len(h.log.of("user_speech_end")) < (1 if pause_windows < 10 else 2):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        await h.turn_done()
        expected = 1 if pause_windows < 10 else 2
        assert len(h.log.of("user_speech_start")) == expected
        assert len(h.log.of("user_speech_end")) == expected
    finally:
        await h.conversation.aclose()
