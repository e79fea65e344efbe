"""Turn segmentation: speech probabilities per window in, utterance events out. Pure and
synchronous; no model inside (agent/turntaking/vad.py feeds it Silero's probabilities).

An utterance is the user's speech with its pauses, from a first onset until a silence as long
as `endpoint_ms` (or `max_utterance_s` from its onset). Inside it, a silence of `pause_ms`
is a *pause*: a candidate end of turn, where the conversation asks the semantic endpoint and
starts a speculative reply. Speech after a pause *resumes* the same utterance, so that every
word from its first onset to its last is one audio span; the conversation decides whether
a resumption continues the user's turn (the reply was not heard yet) or begins a new one
(`split`).

Time is counted in stream samples (16 kHz samples received so far in the session), exact and
reproducible; each event also carries the wall time of the block that decided it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from agent.audio import STT_RATE, Int16Array
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
    """Silence that ends an utterance."""
    pause_ms: int = 0
    """Silence that makes a pause (a candidate end of turn); 0: no pause events."""
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
        for name in ("start_ms", "endpoint_ms", "pause_ms", "preroll_ms", "trailing_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_utterance_s <= 0:
            raise ValueError("max_utterance_s must be positive")

    @classmethod
    def from_config(cls, conversation: ConversationConfig, *, semantic: bool) -> VadSettings:
        """With a semantic endpoint the utterance lasts until the endpoint's ceiling (the
        model ends turns earlier); without one, the silence endpoint ends it."""
        return cls(
            threshold=conversation.vad_threshold,
            start_ms=conversation.vad_start_ms,
            endpoint_ms=conversation.endpoint_max_ms if semantic else conversation.endpoint_ms,
            pause_ms=conversation.pause_ms,
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
class SpeechPaused:
    """`pause_ms` of silence inside an utterance: a candidate end of turn."""

    audio: Int16Array
    """The utterance so far: pre-roll, speech, pauses, and `trailing_ms` after the last
    voiced window."""
    audio_start_sample: int
    end_sample: int
    """Stream sample where the last voiced window ended."""
    decided_sample: int
    wall_time: float
    speech_ms: float


@dataclass(frozen=True)
class SpeechResumed:
    """Speech again after a pause, within the same utterance."""

    onset_sample: int
    """Start of the first voiced window after the pause."""
    decided_sample: int
    wall_time: float
    paused_ms: float
    """How long the pause lasted."""


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


TurnEvent = SpeechStarted | SpeechPaused | SpeechResumed | SpeechEnded


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
    utterance starts. In speech, silence begins at the first window below the silence
    threshold and only a window at or above the threshold ends it; `pause_ms` of silence is a
    pause, `endpoint_ms` ends the utterance.
    """

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self._start_samples = settings.start_ms * SAMPLES_PER_MS
        self._endpoint_samples = settings.endpoint_ms * SAMPLES_PER_MS
        self._pause_samples = settings.pause_ms * SAMPLES_PER_MS
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
        self._audio_start: int | None = None
        self._voiced_samples = 0
        self._run_voiced_samples = 0
        self._last_voiced_end = 0
        self._undecided_run = 0
        self._silence_start: int | None = None
        self._paused = False
        self._speech_end_before_pause = 0
        self._resumption: tuple[int, int] | None = None
        """(onset of the latest resumption, end of the speech before its pause)."""

    @property
    def in_speech(self) -> bool:
        """An utterance is open (the user speaks, or pauses shorter than `endpoint_ms`)."""
        return self._in_speech

    @property
    def speaking(self) -> bool:
        """The user is speaking right now: in an utterance and not silent."""
        return self._in_speech and self._silence_start is None

    @property
    def speech_ms(self) -> float:
        """Voiced ms in the current utterance so far (0 when idle)."""
        return self._voiced_samples / SAMPLES_PER_MS if self._in_speech else 0.0

    @property
    def run_speech_ms(self) -> float:
        """Voiced ms since the utterance's onset or its latest resumption (0 when idle):
        how long the user has been talking over the agent, for barge-in."""
        return self._run_voiced_samples / SAMPLES_PER_MS if self._in_speech else 0.0

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

    def split(self) -> None:
        """Make the latest resumption begin a new utterance: what came before it belongs to a
        turn already answered. The new utterance's audio starts up to `preroll_ms` before the
        resumption's onset, never inside the previous speech or its trailing audio."""
        if not self._in_speech or self._resumption is None:
            return
        onset, previous_end = self._resumption
        self._resumption = None
        self._delivered_until = max(
            self._delivered_until, min(previous_end + self._trailing_samples, onset)
        )
        self._audio_start = max(onset - self._preroll_samples, self._delivered_until)
        self._onset_sample = onset
        self._voiced_samples = self._run_voiced_samples
        while self._windows and self._windows[0].end_sample <= self._audio_start:
            self._windows.popleft()

    def utterance_audio(self) -> Int16Array:
        """The open utterance as it would be delivered now (empty when idle)."""
        if not self._in_speech or self._audio_start is None:
            return np.zeros(0, dtype=np.int16)
        return self._slice(self._audio_start, self._audio_end())

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
            self._run_voiced_samples = self._voiced_samples
            self._audio_start = max(
                self._onset_sample - self._preroll_samples, self._delivered_until
            )
            events.append(SpeechStarted(self._onset_sample, self._stream_samples, wall_time))
            events.extend(self._check_max_length(wall_time))
        else:
            self._trim_idle_windows()
        return events

    def _push_in_speech(
        self, start: int, voiced: bool, silent: bool, wall_time: float
    ) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        if voiced:
            if self._paused:
                assert self._silence_start is not None
                paused_samples = start - self._silence_start
                self._paused = False
                self._run_voiced_samples = 0
                self._resumption = (start, self._speech_end_before_pause)
                events.append(
                    SpeechResumed(
                        start, self._stream_samples, wall_time, paused_samples / SAMPLES_PER_MS
                    )
                )
            self._voiced_samples += self._stream_samples - start
            self._run_voiced_samples += self._stream_samples - start
            self._last_voiced_end = self._stream_samples
            self._silence_start = None
        elif silent and self._silence_start is None:
            self._silence_start = start
            self._speech_end_before_pause = self._last_voiced_end
        silence = (
            self._stream_samples - self._silence_start if self._silence_start is not None else 0
        )
        if self._silence_start is not None and silence >= self._endpoint_samples:
            events.append(self._end_utterance(wall_time, forced=False))
            return events
        if self._pause_samples and not self._paused and silence >= self._pause_samples:
            self._paused = True
            events.append(self._pause(wall_time))
        events.extend(self._check_max_length(wall_time))
        return events

    def _pause(self, wall_time: float) -> SpeechPaused:
        assert self._audio_start is not None
        return SpeechPaused(
            audio=self._slice(self._audio_start, self._audio_end()),
            audio_start_sample=self._audio_start,
            end_sample=self._last_voiced_end,
            decided_sample=self._stream_samples,
            wall_time=wall_time,
            speech_ms=self._voiced_samples / SAMPLES_PER_MS,
        )

    def _check_max_length(self, wall_time: float) -> list[TurnEvent]:
        assert self._onset_sample is not None
        if self._stream_samples - self._onset_sample >= self._max_samples:
            return [self._end_utterance(wall_time, forced=True)]
        return []

    def _audio_end(self) -> int:
        return min(self._last_voiced_end + self._trailing_samples, self._stream_samples)

    def _end_utterance(self, wall_time: float, *, forced: bool) -> SpeechEnded:
        assert self._onset_sample is not None and self._audio_start is not None
        audio_start, audio_end = self._audio_start, self._audio_end()
        event = SpeechEnded(
            audio=self._slice(audio_start, audio_end),
            audio_start_sample=audio_start,
            onset_sample=self._onset_sample,
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
