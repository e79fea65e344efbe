"""Piper voices (VITS exported to ONNX, espeak-ng phonemes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from agent.audio import Int16Array


class PiperSynthesizer:
    """`voice` speaks every chunk; `urgent_voice`, when given, is the same voice on its own
    onnxruntime session with every core, for the chunks the listener waits for (the reply's
    first): on 2 cores an eight-word clause took about 165 ms on both against 290 ms on one,
    while the LLM in the process waits for it (agent/stages/llm/cores.py). The later chunks
    are spoken on `voice`'s threads beside the LLM, which goes on writing: waiting for them
    held the one model every session shares (benchmarks/results/small/cores/)."""

    def __init__(self, voice: Any, urgent_voice: Any | None = None) -> None:
        self._voice = voice
        self._urgent_voice = urgent_voice if urgent_voice is not None else voice
        self._others_idle: Callable[[], bool] = lambda: True

    def share_cores(self, others_idle: Callable[[], bool]) -> None:
        """Speak an urgent chunk on every core only while `others_idle()` (no other
        recognition, end-of-turn or voice call): beside them, a session whose threads
        meet at every layer goes at the pace of the one that lost its core (in a bench run
        without this check, not kept, two sessions' first chunk p90 was 875 ms against 312
        on one thread: README, Benchmarks)."""
        self._others_idle = others_idle

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    @property
    def cpu_threads(self) -> int:
        """Threads onnxruntime speaks an urgent chunk on (0: its default, every core)."""
        return _intra_op_threads(self._urgent_voice)

    def threads_for(self, *, urgent: bool) -> int:
        """Threads a chunk would be spoken on now."""
        return _intra_op_threads(self._voice_for(urgent))

    def _voice_for(self, urgent: bool) -> Any:
        return self._urgent_voice if urgent and self._others_idle() else self._voice

    def synthesize(self, text: str, *, urgent: bool = False) -> Int16Array:
        voice = self._voice_for(urgent)
        # Piper yields one chunk per sentence; iterate here, inside the worker thread.
        # (Its espeak-ng phonemizer is behind Piper's own lock: two sessions may speak at once.)
        chunks = [chunk.audio_int16_array for chunk in voice.synthesize(text)]
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)


def _intra_op_threads(voice: Any) -> int:
    return int(voice.session.get_session_options().intra_op_num_threads)
