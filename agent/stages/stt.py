"""Transcription of one user utterance with faster-whisper, in a worker thread."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from agent.audio import STT_RATE, Int16Array, int16_to_float
from agent.threads import run_in

NO_SPEECH_PROBABILITY = 0.6


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    audio_s: float


class Transcriber:
    def __init__(self, model: Any, language: str | None, executor: Executor) -> None:
        """`language`: Whisper's code, or None to detect it per utterance."""
        self._model = model
        self._language = language
        self._executor = executor

    async def transcribe(self, audio: Int16Array) -> Transcript:
        return await run_in(self._executor, self.transcribe_blocking, audio)

    def transcribe_blocking(self, audio: Int16Array) -> Transcript:
        segments, info = self._model.transcribe(
            int16_to_float(audio),
            language=self._language,
            beam_size=1,
            best_of=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # Silero already cut the utterance
        )
        # `segments` is lazy: decoding happens here, while iterating, in this worker thread.
        texts = [s.text.strip() for s in segments if s.no_speech_prob < NO_SPEECH_PROBABILITY]
        text = " ".join(t for t in texts if t)
        return Transcript(text=text, language=info.language, audio_s=audio.size / STT_RATE)
