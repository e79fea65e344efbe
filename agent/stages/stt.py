"""Transcription of one user utterance with faster-whisper, in a worker thread.

Whisper's encoder costs what its window holds, and faster-whisper always pads the window to
30 s. An utterance is first decoded on a window cut to its own length plus some silence
(`agent.stages.whisper_window`); when `agent.stages.stt_guard` does not trust that decode,
the utterance is transcribed again on the full 30 s window, with a warning in the log and
the reason in the `Transcript`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.audio import STT_RATE, Int16Array, int16_to_float
from agent.stages.stt_guard import WindowGuard
from agent.stages.whisper_window import (
    FRAMES_PER_SECOND,
    FULL_WINDOW_FRAMES,
    DecoderChoice,
    WhisperWindow,
)
from agent.threads import run_in

log = logging.getLogger(__name__)

NO_SPEECH_PROBABILITY = 0.6
FULL_WINDOW_S = FULL_WINDOW_FRAMES / FRAMES_PER_SECOND


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    audio_s: float
    window_s: float = FULL_WINDOW_S
    """Seconds of audio window the kept text was decoded on (30: faster-whisper's full one)."""
    fallback: str | None = None
    """Why the cut window's decode was not trusted and the full window decoded again."""
    decode_ms: float | None = None
    """Compute time of this transcription (both decodes when it fell back)."""
    last_word_probability: float | None = None
    """How sure Whisper is of the last word, where the transcriber was asked to score it."""

    @property
    def fell_back(self) -> bool:
        return self.fallback is not None


@dataclass(frozen=True)
class WindowCounts:
    """Since start: transcriptions tried on a cut window, and those redone on the full one."""

    cut: int
    fell_back: int


class Transcriber:
    def __init__(
        self,
        model: Any,
        language: str | None,
        executor: Executor,
        *,
        cut_window: bool = True,
        guard: WindowGuard | None = None,
        score_last_word: Callable[[str], bool] | None = None,
        one_thread_decoder: Any | None = None,
    ) -> None:
        """`language`: Whisper's code, or None to detect it per utterance. `cut_window`
        False: always faster-whisper's full 30 s window (the reference). `score_last_word`:
        the transcripts whose last word's probability matters (to the endpoint: a word
        Whisper made up in a pause can make a sentence cut mid-phrase read finished); it is
        scored on cut-window decodes only. `one_thread_decoder`: a candidate decoder for the
        cut window (`WhisperWindow`), kept by `choose_decoder` where it is faster."""
        self._model = model
        self._language = language
        self._executor = executor
        self._window = WhisperWindow(model, one_thread_decoder) if cut_window else None
        self._guard = guard or WindowGuard()
        self._score_last_word = score_last_word
        self._counts_lock = threading.Lock()
        self._cut = self._fell_back = 0

    @property
    def counts(self) -> WindowCounts:
        with self._counts_lock:
            return WindowCounts(self._cut, self._fell_back)

    def choose_decoder(self) -> DecoderChoice | None:
        """Blocking: see `WhisperWindow.choose_decoder` (None: nothing to choose from)."""
        return self._window.choose_decoder() if self._window is not None else None

    async def transcribe(self, audio: Int16Array) -> Transcript:
        return await run_in(self._executor, self.transcribe_blocking, audio)

    def transcribe_blocking(self, audio: Int16Array) -> Transcript:
        started = time.perf_counter()
        samples = int16_to_float(audio)
        audio_s = audio.size / STT_RATE
        fallback = None
        if self._window is not None:
            frames = self._guard.window_frames(self._window.content_frames(samples.size))
            if frames is not None:
                decode = self._window.decode(
                    samples,
                    frames,
                    self._language,
                    self._guard.token_limit(audio_s),
                    score_last_word=self._score_last_word,
                )
                fallback = self._guard.rejection(decode)
                self._count(fell_back=fallback is not None)
                if fallback is None:
                    speech = decode.no_speech_prob < NO_SPEECH_PROBABILITY
                    return Transcript(
                        text=decode.text if speech else "",
                        language=decode.language,
                        audio_s=audio_s,
                        window_s=frames / FRAMES_PER_SECOND,
                        decode_ms=(time.perf_counter() - started) * 1000,
                        last_word_probability=decode.last_word_probability if speech else None,
                    )
                log.warning(
                    "speech recognition on a %.1f s window (%.1f s of audio) %s: "
                    "transcribing again on the full %d s window",
                    frames / FRAMES_PER_SECOND,
                    audio_s,
                    fallback,
                    FULL_WINDOW_S,
                )
        text, language = self._full_window(samples)
        return Transcript(
            text=text,
            language=language,
            audio_s=audio_s,
            window_s=FULL_WINDOW_S,
            fallback=fallback,
            decode_ms=(time.perf_counter() - started) * 1000,
        )

    def _full_window(self, samples: np.ndarray) -> tuple[str, str]:
        segments, info = self._model.transcribe(
            samples,
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
        return " ".join(t for t in texts if t), str(info.language)

    def _count(self, *, fell_back: bool) -> None:
        with self._counts_lock:
            self._cut += 1
            self._fell_back += fell_back


__all__ = ["NO_SPEECH_PROBABILITY", "Transcriber", "Transcript", "WindowCounts"]
