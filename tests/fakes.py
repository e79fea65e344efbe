"""Timeline-scripted fakes of the model stages, for unit tests of timing and control logic.
The same behaviour is tested through the real libraries in the end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.audio import STT_RATE, Int16Array
from agent.stages.llm import Generation, Message
from agent.stages.stt import Transcript


@dataclass
class ScriptedTranscriber:
    texts: list[str]
    delay_s: float = 0.01
    calls: list[Int16Array] = field(default_factory=list)
    last_word_probabilities: list[float | None] = field(default_factory=list)
    """Given with each text in turn, as far as the list goes."""

    async def transcribe(self, audio: Int16Array) -> Transcript:
        self.calls.append(audio)
        text = self.texts.pop(0) if self.texts else ""
        last_word = self.last_word_probabilities.pop(0) if self.last_word_probabilities else None
        await asyncio.sleep(self.delay_s)
        return Transcript(
            text=text,
            language="en",
            audio_s=audio.size / STT_RATE,
            last_word_probability=last_word,
        )


@dataclass
class ScriptedChat:
    """Replies with `reply`, one word per `token_delay_s`, after `first_token_delay_s`."""

    reply: str = "Sure, I can help with that. It is sunny today."
    first_token_delay_s: float = 0.02
    token_delay_s: float = 0.005
    fail: Exception | None = None
    prompts: list[list[Message]] = field(default_factory=list)
    cancelled: int = 0
    stopped_early: int = 0
    """Generations ended because the caller had enough (the sentence cap)."""
    written: list[str] = field(default_factory=list)
    """Each generation's text, up to where it ended."""

    async def generate(
        self,
        messages: list[Message],
        on_delta: Callable[[str], None],
        max_tokens: int | None = None,
        *,
        conversation: object | None = None,
    ) -> Generation:
        self.prompts.append([dict(m) for m in messages])
        first: float | None = None
        try:
            await asyncio.sleep(self.first_token_delay_s)
            if self.fail is not None:
                raise self.fail
            words = self.reply.split(" ")
            if max_tokens is not None:
                words = words[:max_tokens]
            finish = "length" if len(words) < len(self.reply.split(" ")) else "stop"
            sent = 0
            for i, word in enumerate(words):
                if first is None:
                    first = time.time()
                sent += 1
                if on_delta(word if i == 0 else " " + word):
                    finish = "enough"
                    self.stopped_early += 1
                    break
                await asyncio.sleep(self.token_delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        text = " ".join(words[:sent])
        self.written.append(text)
        return Generation(text, 10, 10, sent, 0.0, first, finish_reason=finish)


@dataclass
class ToneSynthesizer:
    """Speech stand-in: 60 ms of tone per word at 16 kHz."""

    sample_rate: int = 16_000
    texts: list[str] = field(default_factory=list)
    urgent: list[bool] = field(default_factory=list)

    def synthesize(self, text: str, *, urgent: bool = False) -> Int16Array:
        self.texts.append(text)
        self.urgent.append(urgent)
        n = int(0.06 * self.sample_rate) * max(1, len(text.split()))
        t = np.arange(n) / self.sample_rate
        return (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


class RecordingTrack:
    """The AgentAudioTrack verbs, played out in simulated real time (`advance`, or by
    `wait_for_playout`); nothing plays while paused."""

    def __init__(self) -> None:
        self.queued = 0
        self.sent = 0
        self.paused = False
        self.pauses = 0
        self._listener: Callable[[float], None] | None = None
        self.cleared: list[int] = []
        self.writes: list[int] = []

    @property
    def utterance_sent_samples(self) -> int:
        return self.sent

    @property
    def queued_samples(self) -> int:
        return self.queued

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        self.paused = False

    def tap(self, listener: object) -> None:
        pass

    def write(self, pcm: Int16Array, sample_rate: int) -> int:
        samples = int(pcm.size * 48_000 / sample_rate)
        self.queued += samples
        self.writes.append(samples)
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener(time.time())
        return samples

    def clear(self) -> int:
        heard = self.sent
        self.cleared.append(heard)
        self.queued = 0
        self.sent = 0
        self.paused = False
        return heard

    def advance(self, seconds: float) -> None:
        if self.paused:
            return
        played = min(self.queued, int(seconds * 48_000))
        self.queued -= played
        self.sent += played

    async def wait_for_playout(self) -> int:
        while self.queued:
            await asyncio.sleep(0.005)
            self.advance(0.05)
        sent, self.sent = self.sent, 0
        return sent

    def on_first_audio(self, listener: Callable[[float], None] | None) -> None:
        self._listener = listener

    def drop_first_audio(self, listener: Callable[[float], None]) -> None:
        if self._listener == listener:
            self._listener = None


@dataclass
class EventLog:
    events: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


class SlowGenerate:
    """A real CTranslate2 Whisper whose `generate` takes `delay_s` longer (and counts its
    calls): the timing `WhisperWindow.choose_decoder` chooses on, scripted."""

    def __init__(self, model: Any, delay_s: float) -> None:
        self._model = model
        self._delay_s = delay_s
        self.generate_calls = 0

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        self.generate_calls += 1
        time.sleep(self._delay_s)
        return self._model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)
