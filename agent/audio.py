"""Audio helpers: resampling with PyAV, int16 to float, level, PyAV frames."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]

STT_RATE = 16_000
"""Rate of everything the session hands to VAD and STT."""
OUTPUT_RATE = 48_000
"""Rate of the outgoing WebRTC track (Opus runs at 48 kHz)."""
FRAME_MS = 20
OUTPUT_FRAME_SAMPLES = OUTPUT_RATE * FRAME_MS // 1000


def int16_to_float(pcm: Int16Array) -> Float32Array:
    return np.divide(pcm, 32768.0, dtype=np.float32)


def rms(pcm: Int16Array) -> float:
    """Root mean square of int16 PCM, in sample units (0 for no samples)."""
    if pcm.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(pcm.astype(np.float64)))))


class MonoResampler:
    """Converts any PyAV audio frame, or raw mono int16 PCM, to mono int16 at one rate.

    A resampler keeps filter state between calls, so one instance serves one continuous
    stream; `flush()` returns the tail it still holds.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def resample_frame(self, frame: av.AudioFrame) -> Int16Array:
        return _concat(self._resampler.resample(frame))

    def resample_pcm(self, pcm: Int16Array, sample_rate: int) -> Int16Array:
        if pcm.size == 0:
            return np.zeros(0, dtype=np.int16)
        frame = pcm_to_frame(pcm, sample_rate)
        return self.resample_frame(frame)

    def flush(self) -> Int16Array:
        return _concat(self._resampler.resample(None))


def pcm_to_frame(pcm: Int16Array, sample_rate: int, pts: int | None = None) -> av.AudioFrame:
    """Mono int16 PCM as a PyAV frame (time base 1/sample_rate)."""
    data = np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
    frame.sample_rate = sample_rate
    frame.time_base = Fraction(1, sample_rate)
    if pts is not None:
        frame.pts = pts
    return frame


def resample_pcm(pcm: Int16Array, from_rate: int, to_rate: int) -> Int16Array:
    """One-shot resampling of a complete buffer, tail included."""
    if from_rate == to_rate:
        return np.asarray(pcm, dtype=np.int16)
    resampler = MonoResampler(to_rate)
    head = resampler.resample_pcm(pcm, from_rate)
    return np.concatenate([head, resampler.flush()])


def _concat(frames: list[av.AudioFrame]) -> Int16Array:
    if not frames:
        return np.zeros(0, dtype=np.int16)
    parts = [f.to_ndarray().reshape(-1) for f in frames]
    return np.concatenate(parts).astype(np.int16, copy=False)
