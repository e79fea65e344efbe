"""The conversation's turn-taking with timeline-scripted fakes: the real TurnSegmenter fed a
scripted speech probability per 32 ms window, a scripted end-of-turn model, scripted speech
recognition, LLM and voice, and a track played out in simulated time. The same behaviour
through the real libraries (Silero, Smart Turn, Whisper, SmolLM2, Piper over WebRTC) is in
tests/test_turn_taking_small.py and tests/test_conversation_e2e.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest
import pytest_asyncio

from agent.audio import Int16Array
from agent.config import ConversationConfig
from agent.dialogue.conversation import Conversation
from agent.dialogue.listening import Listening
from agent.dialogue.turn import TurnDeps
from agent.events import TurnMetrics
from agent.metrics import Metrics
from agent.turntaking.segmenter import TurnEvent, TurnSegmenter, VadSettings
from tests.fakes import EventLog, RecordingTrack, ScriptedChat, ScriptedTranscriber, ToneSynthesizer

WINDOW = 512
WINDOW_S = WINDOW / 16_000
SPEECH, SILENCE = 0.9, 0.05


class ScriptedVad:
    """The real TurnSegmenter, fed the probability `level` for every window; the test
    changes `level` as the script goes (speech, silence)."""

    def __init__(self, settings: VadSettings) -> None:
        self.segmenter = TurnSegmenter(settings)
        self.level = SILENCE
        self._pending = np.zeros(0, dtype=np.int16)

    def feed(self, block: Int16Array, wall_time: float) -> list[TurnEvent]:
        self._pending = np.concatenate([self._pending, block])
        out: list[TurnEvent] = []
        while self._pending.size >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            out.extend(self.segmenter.push(window, self.level, wall_time))
        return out


@dataclass
class ScriptedTurnModel:
    """P(complete) per call, in order (the last one repeats)."""

    probabilities: list[float] = field(default_factory=lambda: [0.9])
    calls: list[int] = field(default_factory=list)

    def probability(self, audio: Int16Array) -> float:
        self.calls.append(audio.size)
        if len(self.probabilities) > 1:
            return self.probabilities.pop(0)
        return self.probabilities[0]


class RealTimeTrack(RecordingTrack):
    """Plays only as the harness advances it, at the speed of the scripted audio."""

    async def wait_for_playout(self) -> int:
        while self.queued:
            await asyncio.sleep(0.005)
        sent, self.sent = self.sent, 0
        return sent


class Harness:
    def __init__(
        self,
        executor: ThreadPoolExecutor,
        config: ConversationConfig,
        *,
        turn_model: ScriptedTurnModel | None = None,
    ) -> None:
        self.log = EventLog()
        self.track = RealTimeTrack()
        self.transcriber = ScriptedTranscriber(["Hello there"])
        self.chat = ScriptedChat()
        self.tts = ToneSynthesizer()
        self.metrics = Metrics()
        self.turn_model = turn_model
        settings = VadSettings.from_config(config, semantic=turn_model is not None)
        self.vad = ScriptedVad(settings)
        deps = TurnDeps(
            transcriber=self.transcriber,
            chat=self.chat,
            tts=self.tts,
            tts_executor=executor,
            track=cast(Any, self.track),
            emit=self.log,
        )
        self.conversation = Conversation(
            config=config,
            listening=Listening(self.vad, executor, turn_model, executor if turn_model else None),
            deps=deps,
            metrics=self.metrics,
        )

    async def play(self, level: float, seconds: float) -> None:
        """`seconds` of audio at speech probability `level`, in 20 ms blocks in real time
        (so that the conversation's tasks run as the audio goes)."""
        self.vad.level = level
        for _ in range(round(seconds / 0.02)):
            self.conversation.feed(np.zeros(320, dtype=np.int16), 0)
            await asyncio.sleep(0.02)
            self.track.advance(0.02)

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
                self.track.advance(0.01)

    async def turn_done(self) -> None:
        await self.until(lambda: not self.conversation.busy)

    async def talk_turns(self, count: int = 1) -> None:
        """`count` user turns, each answered to its end: speech, then a pause that ends it."""
        for _ in range(count):
            await self.play(SPEECH, 0.6)
            await self.play(SILENCE, 0.5)
            await self.turn_done()

    def said_in(self, turn: int) -> list[str]:
        """The chunks of text the agent spoke in `turn`."""
        return [e["delta"] for e in self.log.of("agent_text") if e["turn"] == turn]

    def counter(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


@pytest.fixture
def executor() -> Any:
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=True)


Make = Callable[..., Harness]


@pytest_asyncio.fixture
async def make(executor: ThreadPoolExecutor) -> AsyncIterator[Make]:
    made: list[Harness] = []

    def build(config: ConversationConfig | None = None, **kwargs: Any) -> Harness:
        harness = Harness(executor, config or ConversationConfig(), **kwargs)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        await harness.conversation.aclose()


def stages(metrics: dict[str, Any]) -> list[float]:
    return [metrics[s] for s in TurnMetrics.STAGES]


async def test_silence_endpoint_turn_in_order_with_metrics(make: Make) -> None:
    h = make()
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    types = h.log.types()
    assert types[:3] == ["user_speech_start", "user_speech_end", "transcript"]
    assert types.index("agent_text") < types.index("agent_speech_start")
    assert types[-2:] == ["agent_speech_end", "turn_metrics"]
    (metrics,) = h.log.of("turn_metrics")
    values = stages(metrics)
    assert all(v is not None and v >= 0 for v in values), metrics
    # Speculation: recognition starts in the pause, before the 300 ms endpoint.
    assert values[1:] == sorted(values[1:]), metrics
    assert metrics["endpoint_ms"] <= metrics["first_frame_sent_ms"]
    assert 300 <= metrics["endpoint_ms"] < 500, metrics
    assert metrics["stt_done_ms"] < metrics["endpoint_ms"], metrics
    assert metrics["endpoint"] == "silence" and metrics["speculation"] == "used"
    assert metrics["interrupted"] is False
    assert h.conversation.history.messages[1:] == [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Sure, I can help with that. It is sunny today."},
    ]
    assert h.tts.texts[0] == "Sure, I can help with that."
    assert h.counter("voice_agent_speculation_total", outcome="used") == 1


async def test_without_speculation_the_reply_starts_at_the_endpoint(make: Make) -> None:
    h = make(ConversationConfig(speculate=False))
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["speculation"] == "none"
    assert metrics["stt_done_ms"] >= metrics["endpoint_ms"], metrics


async def test_semantic_endpoint_ends_the_turn_at_the_pause(make: Make) -> None:
    model = ScriptedTurnModel([0.95])
    h = make(turn_model=model)
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.6)  # far shorter than the 2 s ceiling
    await h.turn_done()
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["endpoint"] == "semantic" and metrics["turn_probability"] == 0.95
    assert metrics["endpoint_ms"] < 300, metrics  # the pause (160 ms) and the model's call
    assert len(model.calls) == 1
    assert h.counter("voice_agent_endpoints_total", kind="semantic") == 1


async def test_incomplete_turn_waits_for_the_ceiling(make: Make) -> None:
    h = make(ConversationConfig(endpoint_max_ms=800), turn_model=ScriptedTurnModel([0.1]))
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.5)
    (pending,) = h.log.of("turn_pending")
    assert pending["reason"] == "prosody" and pending["probability"] == 0.1
    assert not h.log.of("transcript")  # prepared, but not shown: the turn is not over
    await h.play(SILENCE, 0.6)
    await h.turn_done()
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["endpoint"] == "ceiling" and 800 <= metrics["endpoint_ms"] < 1000
    assert metrics["speculation"] == "used"


@pytest.mark.parametrize(
    ("probability", "words", "endpoint"),
    [
        # It does not sound finished, but it reads finished: the words endpoint, sooner.
        (0.3, "Stop, I have another question.", "words"),
        # Whisper wrote "We visited Paris, Rome," and a pause as a finished sentence; Smart
        # Turn was sure it went on (below SURE_INCOMPLETE): the words do not end it early.
        (0.016, "We visited Paris, Rome.", "ceiling"),
    ],
)
async def test_a_turn_that_sounds_unfinished_but_reads_finished(
    make: Make, probability: float, words: str, endpoint: str
) -> None:
    h = make(
        # The unsure wait apart from the words one: this case is the words endpoint's.
        ConversationConfig(endpoint_max_ms=1500, endpoint_words_ms=600, endpoint_unsure_ms=1200),
        turn_model=ScriptedTurnModel([probability]),
    )
    h.transcriber.texts = [words]
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 1.0)
    if endpoint == "ceiling":
        assert not h.log.of("turn_metrics") and not h.track.writes
    await h.play(SILENCE, 0.8)
    await h.turn_done()
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["endpoint"] == endpoint, metrics
    if endpoint == "words":
        assert 600 <= metrics["endpoint_ms"] < 900, metrics
    else:
        assert metrics["endpoint_ms"] >= 1500, metrics


async def test_words_that_stop_mid_phrase_hold_a_turn_that_sounded_complete(make: Make) -> None:
    h = make(turn_model=ScriptedTurnModel([0.9]))
    h.transcriber.texts = ["I'd like to book a table for", "I'd like to book a table for four."]
    await h.play(SPEECH, 0.8)
    await h.play(SILENCE, 0.6)
    await h.until(lambda: bool(h.log.of("turn_pending")))
    assert h.log.of("turn_pending")[0]["reason"] == "words"
    assert not h.log.of("agent_speech_start") and not h.track.writes
    await h.play(SPEECH, 0.4)  # "... four."
    await h.play(SILENCE, 0.6)
    await h.turn_done()
    (transcript,) = h.log.of("transcript")
    assert transcript["text"] == "I'd like to book a table for four."
    user = [m for m in h.conversation.history.messages if m["role"] == "user"]
    assert user == [{"role": "user", "content": "I'd like to book a table for four."}]
    first, second = h.transcriber.calls
    assert second.size > first.size + 0.5 * 16_000  # the whole utterance, pause included


async def test_an_unsure_ending_waits_the_unsure_endpoint_then_ends_the_turn(make: Make) -> None:
    """ "... a table for it.", "it" unsure (Whisper made it up in the pause): neither the
    prosody's 160 ms nor the 2 s ceiling, but `endpoint_unsure_ms` (not the shorter wait of
    words that read finished)."""
    h = make(
        ConversationConfig(endpoint_max_ms=2000, endpoint_words_ms=300, endpoint_unsure_ms=600),
        turn_model=ScriptedTurnModel([0.9]),
    )
    h.transcriber.texts = ["I would like to book a table for it."]
    h.transcriber.last_word_probabilities = [0.4]
    await h.play(SPEECH, 0.8)
    await h.play(SILENCE, 0.4)
    (pending,) = h.log.of("turn_pending")
    assert pending["reason"] == "unsure word" and pending["probability"] == 0.9
    assert not h.log.of("agent_speech_start") and not h.track.writes
    await h.play(SILENCE, 0.8)
    await h.turn_done()
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["endpoint"] == "words", metrics
    assert 600 <= metrics["endpoint_ms"] < 900, metrics
    assert metrics["speculation"] == "used"


async def test_an_unsure_ending_the_user_goes_on_from_is_one_message(make: Make) -> None:
    h = make(
        ConversationConfig(endpoint_max_ms=2000, endpoint_words_ms=600),
        turn_model=ScriptedTurnModel([0.9, 0.9]),
    )
    whole = "I would like to book a table for four people."
    h.transcriber.texts = ["I would like to book a table for it.", whole]
    h.transcriber.last_word_probabilities = [0.4, 0.95]
    await h.play(SPEECH, 0.8)
    await h.play(SILENCE, 0.4)
    assert h.log.of("turn_pending")[0]["reason"] == "unsure word"
    await h.play(SPEECH, 0.5)  # "... four people."
    await h.play(SILENCE, 0.6)
    await h.turn_done()
    (transcript,) = h.log.of("transcript")
    assert transcript["text"] == whole
    user = [m for m in h.conversation.history.messages if m["role"] == "user"]
    assert user == [{"role": "user", "content": whole}]
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["endpoint"] == "semantic", metrics


async def test_a_sure_last_word_ends_the_turn_at_the_pause(make: Make) -> None:
    h = make(turn_model=ScriptedTurnModel([0.9]))
    h.transcriber.texts = ["I want to go to the station."]
    h.transcriber.last_word_probabilities = [0.95]
    await h.play(SPEECH, 0.8)
    await h.play(SILENCE, 0.6)
    await h.turn_done()
    assert not h.log.of("turn_pending")
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["endpoint"] == "semantic" and metrics["endpoint_ms"] < 300, metrics


async def test_resuming_in_the_pause_discards_the_prepared_reply(make: Make) -> None:
    h = make(ConversationConfig(endpoint_ms=600))
    h.transcriber.texts = ["So I was thinking", "So I was thinking we could go hiking."]
    h.chat.token_delay_s = 0.1  # still generating when the user goes on
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.35)  # a pause: the reply is prepared, held
    await h.until(lambda: len(h.chat.prompts) == 1)
    await h.play(SPEECH, 0.5)  # the user goes on
    await h.play(SILENCE, 0.8)
    await h.turn_done()
    assert [e["text"] for e in h.log.of("transcript")] == ["So I was thinking we could go hiking."]
    assert [e["turn"] for e in h.log.of("turn_metrics")] == [1]
    assert len(h.log.of("user_speech_start")) == 2 and not h.log.of("interrupted")
    assert h.chat.cancelled == 1
    assert h.chat.prompts[-1][-1] == {
        "role": "user",
        "content": "So I was thinking we could go hiking.",
    }
    assert h.counter("voice_agent_speculation_total", outcome="wasted") == 1
    assert h.counter("voice_agent_speculation_wasted_seconds_total") > 0


async def test_resuming_before_the_reply_is_heard_is_one_user_turn(make: Make) -> None:
    h = make()
    h.transcriber.texts = ["What is", "What is the weather like"]
    h.chat.first_token_delay_s = 0.6  # released at the endpoint, nothing to hear yet
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.45)
    assert h.log.of("transcript") and not h.log.of("agent_speech_start")
    await h.play(SPEECH, 0.5)
    (taken_back,) = h.log.of("interrupted")
    assert taken_back["heard"] == "" and not taken_back["false_interruption"]
    h.chat.first_token_delay_s = 0.01
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    assert h.chat.prompts[-1][-1] == {"role": "user", "content": "What is the weather like"}
    user = [m for m in h.conversation.history.messages if m["role"] == "user"]
    assert user == [{"role": "user", "content": "What is the weather like"}]
    assert {e["turn"] for e in h.log.of("transcript")} == {1}


async def test_resuming_after_the_first_frames_but_before_a_word_is_one_user_turn(
    make: Make,
) -> None:
    """The reply to a pause has begun to play, but not one whole word of it has reached the
    user when they go on with their sentence: still their turn, not an interruption (with
    the reply ready 700 ms into a 900 ms pause, a user went on 130 ms after it began)."""
    h = make(ConversationConfig(endpoint_max_ms=2000), turn_model=ScriptedTurnModel([0.9]))
    h.transcriber.texts = ["What is the weather.", "What is the weather like today?"]
    h.transcriber.last_word_probabilities = [0.95, 0.95]
    h.chat.reply = "Unquestionably, it is sunny today."  # a long first word
    tone = h.tts.synthesize
    h.tts.synthesize = lambda text, urgent=False: np.tile(tone(text), 6)  # type: ignore[method-assign]
    await h.play(SPEECH, 0.8)
    await h.play(SILENCE, 0.2)
    await h.until(lambda: h.track.sent > 0)
    await h.play(SPEECH, 0.5)
    (taken_back,) = h.log.of("interrupted")
    assert taken_back["heard"] == "" and not taken_back["false_interruption"]
    await h.play(SILENCE, 0.6)
    await h.until(lambda: len(h.log.of("transcript")) == 2)
    await h.turn_done()
    whole = {"role": "user", "content": "What is the weather like today?"}
    # Both replies were released before their transcripts were ready: each prompt holds the
    # user's words once.
    assert [prompt[-1] for prompt in h.chat.prompts] == [
        {"role": "user", "content": "What is the weather."},
        whole,
    ]
    assert [m for m in h.conversation.history.messages if m["role"] == "user"] == [whole]
    assert {e["turn"] for e in h.log.of("transcript")} == {1}


async def talk_until_the_agent_speaks(h: Harness) -> None:
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.45)
    await h.until(lambda: h.track.sent > 0)


async def test_talking_over_the_agent_pauses_it_and_an_interruption_clears_it(make: Make) -> None:
    h = make()
    h.transcriber.texts = ["Tell me about the sea", "Stop", "What about", "What about rivers"]
    h.chat.reply = "The sea is vast and deep and full of life. It covers most of the earth."
    await talk_until_the_agent_speaks(h)
    await h.play(SPEECH, 0.13)  # onset: start_ms (100 ms) of speech
    assert h.track.paused, "the agent keeps talking over the user"
    sent_when_paused = h.track.sent
    await h.play(SPEECH, 0.05)
    await h.play(SILENCE, 0.18)  # "Stop, ..." a comma inside the overlap: still one
    await h.play(SPEECH, 0.1)
    await h.play(SILENCE, 0.2)
    await h.until(lambda: bool(h.log.of("interrupted")))
    (interrupted,) = h.log.of("interrupted")
    assert not interrupted["false_interruption"] and not interrupted["resumed"]
    heard = interrupted["heard"]
    assert h.chat.reply.startswith(heard)
    assert h.track.cleared[0] == sent_when_paused
    metrics = h.log.of("turn_metrics")[0]
    assert metrics["turn"] == 1 and metrics["interrupted"] is True
    assistant = [m["content"] for m in h.conversation.history.messages if m["role"] == "assistant"]
    assert assistant == ([heard] if heard else [])
    assert {e["turn"] for e in h.log.of("user_speech_start")} == {1, 2}
    # The words over the agent are the user's next turn.
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    assert [e["text"] for e in h.log.of("transcript")][-1] == "What about rivers"
    assert h.log.of("turn_metrics")[-1]["turn"] == 2


@pytest.mark.parametrize("heard", ["Mm-hm.", "", "Yeah, right."])
async def test_a_backchannel_or_noise_resumes_the_agent_where_it_paused(
    make: Make, heard: str
) -> None:
    h = make()
    h.transcriber.texts = ["Tell me about the sea", heard, heard]
    h.chat.reply = "The sea is vast and deep and full of life. It covers most of the earth."
    await talk_until_the_agent_speaks(h)
    await h.play(SPEECH, 0.25)
    assert h.track.paused
    await h.play(SILENCE, 0.3)
    await h.until(lambda: bool(h.log.of("interrupted")))
    (event,) = h.log.of("interrupted")
    assert event["false_interruption"] and event["resumed"]
    assert not h.track.paused
    await h.turn_done()
    assert h.track.cleared == []  # nothing of the reply was dropped
    assistant = h.conversation.history.messages[-1]
    assert assistant == {"role": "assistant", "content": h.chat.reply}
    assert h.counter("voice_agent_false_interruptions_total") == 1
    # The overlap is transcribed once it is long enough to tell, and again once it is over.
    assert len(h.transcriber.calls) == 3


async def test_long_speech_over_the_agent_interrupts_without_waiting_for_words(
    make: Make,
) -> None:
    h = make(ConversationConfig(barge_in_max_ms=500))
    h.transcriber.texts = ["Tell me about the sea"]
    h.transcriber.delay_s = 0.01
    h.chat.reply = "The sea is vast and deep and full of life. It covers most of the earth."
    await talk_until_the_agent_speaks(h)
    h.transcriber.delay_s = 5.0  # the overlap's transcript would come far too late
    await h.play(SPEECH, 0.7)
    (event,) = h.log.of("interrupted")
    assert not event["false_interruption"]


async def test_the_agents_own_words_coming_back_resume_it(make: Make) -> None:
    h = make()
    reply = "The sea is vast and deep and full of life. It covers most of the earth."
    h.transcriber.texts = ["Tell me about the sea", "the sea is vast"]
    h.chat.reply = reply
    await talk_until_the_agent_speaks(h)
    await h.play(SPEECH, 0.25)
    await h.until(lambda: bool(h.log.of("interrupted")))
    assert h.log.of("interrupted")[0]["resumed"]


@pytest.mark.parametrize("lookahead", [True, False])
async def test_an_echo_of_words_just_past_the_estimated_cut_resumes_the_agent(
    make: Make, monkeypatch: pytest.MonkeyPatch, lookahead: bool
) -> None:
    """The cut is estimated from the samples sent, in proportion to letters: the echo can
    repeat a word or two beyond it (the turns benchmark: the agent had said "One" by that
    estimate, the echo was transcribed "One day", and the agent stopped for its own voice)."""
    from agent.dialogue import overlap

    if not lookahead:
        monkeypatch.setattr(overlap, "ECHO_LOOKAHEAD_SAMPLES", 0)
    h = make()
    h.transcriber.texts = ["Tell me about the sea", "is vast and deep and"]
    h.chat.reply = "The sea is vast and deep and full of life. It covers most of the earth."
    await talk_until_the_agent_speaks(h)
    await h.play(SPEECH, 0.25)  # by then "The sea is vast" was sent, by the estimate
    await h.until(lambda: bool(h.log.of("interrupted")))
    assert h.log.of("interrupted")[0]["resumed"] is lookahead


async def test_a_chunk_is_urgent_while_little_of_the_reply_waits_ahead_of_it(make: Make) -> None:
    """The voice may give a chunk more of the machine while the listener would otherwise
    hear silence (agent/stages/tts): the first chunk, and a later one when less than
    URGENT_AHEAD_S of audio is left ahead of it; not one behind seconds of audio."""
    h = make()
    h.transcriber.texts = ["Hello there.", "And tomorrow?"]
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    assert h.tts.texts == ["Sure, I can help with that.", "It is sunny today."]
    assert h.tts.urgent == [True, True]  # 0.36 s of tone ahead of the second chunk

    tone = h.tts.synthesize
    h.tts.synthesize = lambda text, urgent=False: np.tile(tone(text, urgent=urgent), 6)  # type: ignore[method-assign]
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    assert h.tts.urgent[2:] == [True, False]  # 2.2 s of tone ahead of the second chunk


async def test_the_reply_ends_after_its_sentence_cap(make: Make) -> None:
    h = make(ConversationConfig(max_reply_sentences=2))
    h.chat.reply = "One is here. Two is there. Three is far. Four is gone."
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    assert h.conversation.history.messages[-1]["content"] == "One is here. Two is there."
    assert h.chat.stopped_early == 1  # the model was told to stop, not only unheard
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["reply_sentences"] == 2 and metrics["finish_reason"] == "enough"


async def test_the_first_chunk_is_cut_at_its_word_cap(make: Make) -> None:
    """The listener waits in silence for the first chunk: `first_chunk_words` caps it, and
    the rest of its sentence is the next chunk."""
    h = make(ConversationConfig(first_chunk_words=4))
    h.chat.reply = "The capital of Australia is Canberra, not Sydney. It is small."
    await h.talk_turns()
    assert h.tts.texts[:2] == ["The capital of Australia", "is Canberra, not Sydney."]


async def test_a_reply_that_copies_an_earlier_one_is_asked_for_again_without_them(
    make: Make,
) -> None:
    """The scripted model says the same thing every turn, as SmolLM2 did once its history
    held two alike replies: the second turn's first words are a copy, so the reply is asked
    for again without the earlier turns, and only that one is spoken. The copy stops five
    words in, not at the end of its first chunk."""
    h = make()
    h.transcriber.texts = ["Hello there", "Play some music"]
    h.chat.reply = "Sure, I can help with that and anything else you need. It is sunny today."
    await h.talk_turns(2)
    first, second, retry = h.chat.prompts
    assert len(first) == 2 and len(second) == 4
    assert retry == [second[0], {"role": "user", "content": "Play some music"}]
    metrics = h.log.of("turn_metrics")
    assert [m["reply_retried"] for m in metrics] == [False, True]
    spoken = h.said_in(metrics[1]["turn"])
    assert "".join(spoken).count("Sure, I can help with that") == 1  # the copy was not said
    assert h.chat.written[1] == "Sure, I can help with that"
    assert h.conversation.history.messages[-1]["content"] == h.chat.reply


async def test_a_copy_seen_after_the_first_chunk_went_to_the_voice_is_not_heard(
    make: Make,
) -> None:
    """SmolLM2 prefixes its copies: the copy shows in the reply's seventh and eighth words,
    after its first chunk (six words) was handed to the voice. That chunk is synthesized but
    never played: only the reply asked for again is heard."""
    h = make()
    h.transcriber.texts = ["Hello there", "Play some music"]
    h.chat.reply = "I'm glad you're interested in exploring more. It is sunny today."
    await h.talk_turns()
    h.chat.reply = "That's wonderful. I'm glad you're interested in exploring more."
    await h.talk_turns()
    metrics = h.log.of("turn_metrics")
    assert [m["reply_retried"] for m in metrics] == [False, True]
    first_chunk = "That's wonderful. I'm glad you're interested"
    assert h.tts.texts.count(first_chunk) == 2  # voiced before the verdict, then the retry's
    spoken = h.said_in(metrics[1]["turn"])
    assert "".join(spoken).count("That's wonderful") == 1
    assert h.chat.written[1] == "That's wonderful. I'm glad you're interested in exploring"
    assert metrics[1]["first_chunk_ms"] >= metrics[1]["llm_first_token_ms"]  # the retry's


async def test_a_reply_asked_for_again_has_its_whole_sentence_cap(make: Make) -> None:
    """The copy showed only once the first sentence was written (a reply's beginning, "I am
    not sure."): the reply asked for again still gets its sentence, not a cap already
    spent on the withdrawn one."""
    h = make(ConversationConfig(max_reply_sentences=1))
    h.transcriber.texts = ["Can you help?", "Is it raining?"]
    h.chat.reply = "I am not sure. Let me check."
    await h.talk_turns(2)
    metrics = h.log.of("turn_metrics")
    assert [m["reply_retried"] for m in metrics] == [False, True]
    spoken = h.said_in(metrics[1]["turn"])
    assert spoken == ["I am not sure."] and metrics[1]["reply_sentences"] == 1


async def test_a_list_reply_ends_after_its_sentence_cap(make: Make) -> None:
    """A list's items have no marks; each one counts as a sentence."""
    h = make(ConversationConfig(max_reply_sentences=2))
    h.chat.reply = "Some ideas:\n1. Pasta with sauce\n2. Grilled chicken\n3. Soup\n4. Rice\n"
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    # The history keeps the model's own words up to the last chunk said (what its context
    # holds, so the next turn evaluates only the new words), not the chunks as spoken.
    assert h.conversation.history.messages[-1]["content"] == (
        "Some ideas:\n1. Pasta with sauce\n2. Grilled chicken"
    )
    assert h.chat.stopped_early == 1
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["reply_sentences"] == 2 and metrics["finish_reason"] == "enough"


async def test_a_reply_cut_by_the_token_ceiling_drops_its_unfinished_sentence(
    make: Make,
) -> None:
    h = make(ConversationConfig(max_reply_tokens=7))
    h.chat.reply = "One is here, you see. Two is there and more."
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    assert h.conversation.history.messages[-1]["content"] == "One is here, you see."


async def test_utterance_at_maximum_length_is_answered(make: Make) -> None:
    h = make(ConversationConfig(max_utterance_s=1.0))
    h.transcriber.texts = ["A long story"]
    await h.play(SPEECH, 1.1)
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    ends = h.log.of("user_speech_end")
    assert ends[0]["forced"] is True
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["endpoint"] == "forced"


async def test_speech_past_the_maximum_length_continues_the_same_turn(make: Make) -> None:
    """The user who is still talking when the utterance is cut is not talked over: the
    cut reply is dropped unheard and the whole speech is one turn."""
    h = make(ConversationConfig(max_utterance_s=1.0))
    h.transcriber.texts = ["never shown", "A long story, told whole"]
    h.transcriber.delay_s = 0.2
    await h.play(SPEECH, 1.6)
    await h.play(SILENCE, 0.6)
    await h.turn_done()
    assert [e["text"] for e in h.log.of("transcript")] == ["A long story, told whole"]
    assert h.transcriber.calls[-1].size > 1.5 * 16_000


async def test_model_failure_reports_an_error_and_keeps_listening(make: Make) -> None:
    h = make()
    h.transcriber.texts = ["first", "second"]
    h.chat.fail = RuntimeError("llama exploded")
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    (error,) = h.log.of("error")
    assert "llama exploded" in error["message"]
    h.chat.fail = None
    await h.play(SPEECH, 0.6)
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    assert len(h.log.of("turn_metrics")) == 1
    assert h.counter("voice_agent_errors_total") == 1


async def test_a_prepared_reply_that_failed_is_not_reported_when_the_user_goes_on(
    make: Make,
) -> None:
    h = make(ConversationConfig(endpoint_ms=600))
    h.transcriber.texts = ["So", "So anyway"]
    h.chat.fail = RuntimeError("llama exploded")
    await h.play(SPEECH, 0.5)
    await h.play(SILENCE, 0.35)
    await h.until(lambda: len(h.chat.prompts) == 1)
    await asyncio.sleep(0.1)  # the held reply has failed by now
    h.chat.fail = None
    await h.play(SPEECH, 0.5)
    await h.play(SILENCE, 0.8)
    await h.turn_done()
    assert not h.log.of("error")
    assert [e["text"] for e in h.log.of("transcript")] == ["So anyway"]


async def test_stages_are_measured_from_the_end_of_speech(make: Make) -> None:
    h = make()
    h.chat.first_token_delay_s = 0.15
    started = time.time()
    await h.play(SPEECH, 0.6)
    speech_end = time.time()
    await h.play(SILENCE, 0.5)
    await h.turn_done()
    (metrics,) = h.log.of("turn_metrics")
    assert metrics["llm_first_token_ms"] >= 150
    assert metrics["first_frame_sent_ms"] < (time.time() - speech_end) * 1000
    assert speech_end > started
