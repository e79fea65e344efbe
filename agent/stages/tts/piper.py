"""Piper voices (VITS exported to ONNX, espeak-ng phonemes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.audio import Int16Array


class PiperSynthesizer:
    def __init__(self, voice: Any) -> None:
        self._voice = voice

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    @property
    def cpu_threads(self) -> int:
        """Threads onnxruntime synthesizes on (0: its default, every core)."""
        return int(self._voice.session.get_session_options().intra_op_num_threads)

    def synthesize(self, text: str) -> Int16Array:
        # Piper yields one chunk per sentence; iterate here, inside the worker thread.
        chunks = [chunk.audio_int16_array for chunk in self._voice.synthesize(text)]
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)
