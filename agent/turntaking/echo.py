"""The agent's own voice coming back through the user's microphone is not the user.

The browser's echo canceller is the first line; what it leaves (or a client without one)
reaches the server as a quiet, delayed copy of what the agent just said. The server knows
exactly what it sent and when, so it compares the loudness envelope of what it hears
(10 ms frames, log energy) with the envelope of what it sent, at every delay the round trip
could have: a window that follows the agent's own recent output closely (correlation at or
above `MATCH`) at some delay is echo, and the VAD does not count it as speech. A user talking
over the agent has an envelope of their own, so their speech is not masked.

`played` is called on the event loop for every frame sent; `is_echo` in the VAD's worker
thread: a lock guards the history of what was sent.
"""

from __future__ import annotations

import bisect
import collections
import logging
import threading

import numpy as np
import numpy.typing as npt

from agent.audio import OUTPUT_RATE, STT_RATE, Int16Array

log = logging.getLogger(__name__)

HOP_S = 0.01
IN_HOP = round(STT_RATE * HOP_S)
OUT_HOP = round(OUTPUT_RATE * HOP_S)
MIN_DELAY_S = 0.02
MAX_DELAY_S = 0.8
"""Round trips this long are searched: jitter buffers, the network and the sound card."""
SPAN_FRAMES = 30
"""300 ms of envelope compared at once: a few syllables, enough to be specific."""
MATCH = 0.8
HISTORY_S = MAX_DELAY_S + SPAN_FRAMES * HOP_S + 0.5
SPEECH_DB = -50.0
"""Sent frames louder than this (dBFS) count as the agent speaking."""
FLOOR_DB = -90.0


def _level_db(frames: Int16Array) -> npt.NDArray[np.float64]:
    """Log energy (dBFS) of each row of int16 samples."""
    power = np.mean(np.square(frames.astype(np.float64) / 32768.0), axis=1)
    levels: npt.NDArray[np.float64] = np.maximum(
        10.0 * np.log10(np.maximum(power, 1e-12)), FLOOR_DB
    )
    return levels


class EchoMask:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent_at: collections.deque[float] = collections.deque()
        self._sent_db: collections.deque[float] = collections.deque()
        self._heard_at: collections.deque[float] = collections.deque()
        self._heard_db: collections.deque[float] = collections.deque()
        self._heard_tail = np.zeros(0, dtype=np.int16)
        self.checks = 0
        self.matches = 0

    def played(self, pcm: Int16Array, sent_at: float) -> None:
        """A frame of the agent's voice (48 kHz) left the server at wall time `sent_at`."""
        count = pcm.size // OUT_HOP
        if count == 0:
            return
        levels = _level_db(pcm[: count * OUT_HOP].reshape(count, OUT_HOP))
        with self._lock:
            for index, level in enumerate(levels):
                self._sent_at.append(sent_at + index * HOP_S)
                self._sent_db.append(float(level))
            while self._sent_at and self._sent_at[0] < sent_at - HISTORY_S:
                self._sent_at.popleft()
                self._sent_db.popleft()

    def speaking_since(self, now: float, seconds: float = MAX_DELAY_S) -> bool:
        """Did the agent send any speech in the last `seconds`?"""
        with self._lock:
            start = bisect.bisect_left(self._sent_at, now - seconds)
            return any(level > SPEECH_DB for level in list(self._sent_db)[start:])

    def is_echo(self, window: Int16Array, heard_at: float) -> bool:
        """Is this inbound window (16 kHz, whose last sample arrived at `heard_at`) a copy of
        what the agent sent `MIN_DELAY_S` to `MAX_DELAY_S` earlier?"""
        self._hear(window, heard_at)
        heard_db = np.asarray(self._heard_db, dtype=np.float64)[-SPAN_FRAMES:]
        heard_at_frames = np.asarray(self._heard_at, dtype=np.float64)[-SPAN_FRAMES:]
        if heard_db.size < SPAN_FRAMES or np.ptp(heard_db) < 6.0:
            return False  # too little, or too flat to say anything
        with self._lock:
            sent_at = np.asarray(self._sent_at, dtype=np.float64)
            sent_db = np.asarray(self._sent_db, dtype=np.float64)
        if sent_at.size < SPAN_FRAMES or not np.any(sent_db > SPEECH_DB):
            return False
        self.checks += 1
        best, best_delay = -1.0, 0.0
        for delay in np.arange(MIN_DELAY_S, MAX_DELAY_S, HOP_S):
            wanted = heard_at_frames - delay
            indices = np.searchsorted(sent_at, wanted)
            if indices[0] == 0 or indices[-1] >= sent_at.size:
                continue
            candidate = sent_db[indices]
            if np.ptp(candidate) < 6.0 or not np.any(candidate > SPEECH_DB):
                continue
            correlation = float(np.corrcoef(candidate, heard_db)[0, 1])
            if correlation > best:
                best, best_delay = correlation, float(delay)
        if best >= MATCH:
            self.matches += 1
            log.debug("echo: correlation %.2f at %.0f ms", best, best_delay * 1000)
            return True
        return False

    def _hear(self, window: Int16Array, heard_at: float) -> None:
        samples = np.concatenate([self._heard_tail, window]) if self._heard_tail.size else window
        count = samples.size // IN_HOP
        levels = _level_db(samples[: count * IN_HOP].reshape(count, IN_HOP))
        self._heard_tail = samples[count * IN_HOP :].copy()
        first_end = heard_at - (self._heard_tail.size / STT_RATE) - (count - 1) * HOP_S
        for index, level in enumerate(levels):
            self._heard_at.append(first_end + index * HOP_S)
            self._heard_db.append(float(level))
        while len(self._heard_db) > SPAN_FRAMES * 2:
            self._heard_at.popleft()
            self._heard_db.popleft()


def echoes_agent(transcript: str, agent_said: str, share: float = 0.7) -> bool:
    """Do the words heard over the agent mostly repeat what it just said? The backstop for
    echo the envelope test let through (for the barge-in judge)."""
    heard = [w for w in _words(transcript)]
    if not heard:
        return False
    said = set(_words(agent_said))
    return sum(1 for w in heard if w in said) >= share * len(heard)


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c == "'" else " " for c in text).split()
