"""The agent's own voice coming back through the user's microphone is not the user.

The browser's echo canceller is the first line; what it leaves (or a client without one)
reaches the server as a quiet, delayed copy of what the agent just said. The server knows
exactly what it sent and when, so it compares the loudness envelope of what it hears
(10 ms frames, log energy) with the envelope of what it sent, at every delay the round trip
could have: a window that follows the agent's own recent output closely (correlation at or
above `MATCH`) at some delay is echo, and the VAD does not count it as speech. A user talking
over the agent has an envelope of their own, so their speech is not masked.

Once a window matched, the echo path is known: its delay and its loss (how many dB quieter
the copy comes back). Until it goes stale (`PATH_FRESH_S` without a match), a window no
louder than what that path predicts from the agent's output (within `RESIDUAL_DB`) is echo
too, even where the envelopes matched less well (a syllable, a codec's smearing): the user's
own voice comes on top of the echo, louder than it.

`played` is called on the event loop for every frame sent; `hear` (every inbound window)
and `is_echo` (the voiced ones) in the VAD's worker thread: a lock guards the history of
what was sent.
"""

from __future__ import annotations

import bisect
import collections
import difflib
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
RESIDUAL_DB = 6.0
"""A window at most this much louder than the echo path predicts is still echo."""
MIN_LOSS_DB = 10.0
"""An echo comes back at least this much quieter than it was sent (the distance from the
loudspeaker, the browser's echo canceller). A voice about as loud as the agent's whose
envelope follows it is the user starting to talk as the agent starts a phrase: both onsets
are steps, a round trip apart."""
PATH_FRESH_S = 2.0
"""How long an echo path found by a match is trusted without another one."""
PATH_DRIFT_S = 0.03
"""How far the round trip may move between matches (jitter buffers adapt)."""
RECENT_FRAMES = 3
"""The 10 ms frames of the newest window that the echo path must explain."""
SPEECH_DB = -50.0
"""Sent frames louder than this (dBFS) count as the agent speaking."""
FLOOR_DB = -90.0
QUIET_DB = -55.0
"""Heard frames this quiet are no evidence against an echo."""


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
        self._path: tuple[float, float, float] | None = None
        """(delay s, loss dB, when it was last matched) of the echo path."""
        self.checks = 0
        self.matches = 0
        self.predicted = 0
        """Windows called echo because the known path explains their loudness."""
        self._held = False

    def played(self, pcm: Int16Array, sent_at: float) -> None:
        """A frame of the agent's voice (48 kHz) left the server at wall time `sent_at`."""
        count = pcm.size // OUT_HOP
        if count == 0:
            return
        levels = _level_db(pcm[: count * OUT_HOP].reshape(count, OUT_HOP))
        if self._held and np.any(levels > SPEECH_DB):
            self._held = False  # the agent speaks again: its echo can come back again
        with self._lock:
            for index, level in enumerate(levels):
                self._sent_at.append(sent_at + index * HOP_S)
                self._sent_db.append(float(level))
            while self._sent_at and self._sent_at[0] < sent_at - HISTORY_S:
                self._sent_at.popleft()
                self._sent_db.popleft()

    def hold(self) -> None:
        """The user talks over the agent and its voice has stopped: nothing heard is taken
        for echo until the agent speaks again. What is still in flight of its voice then
        only lengthens the overlap the barge-in judge hears (and reads as the agent's own
        words); masking the user's words there would cut their turn short."""
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def speaking_since(self, now: float, seconds: float = MAX_DELAY_S) -> bool:
        """Did the agent send any speech in the last `seconds`?"""
        with self._lock:
            start = bisect.bisect_left(self._sent_at, now - seconds)
            return any(level > SPEECH_DB for level in list(self._sent_db)[start:])

    def hear(self, window: Int16Array, heard_at: float) -> None:
        """Every inbound window (16 kHz, whose last sample arrived at `heard_at`), voiced or
        not: an echo's onset is told by the silence before it."""
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

    def is_echo(self, heard_at: float) -> bool:
        """Is the newest heard window (whose last sample arrived at `heard_at`, given to
        `hear` first) a copy of what the agent sent `MIN_DELAY_S` to `MAX_DELAY_S` earlier?"""
        if self._held:
            return False
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
        best, best_delay, best_levels = -1.0, 0.0, heard_db
        for delay in self._delays(heard_at):
            wanted = heard_at_frames - delay
            indices = np.searchsorted(sent_at, wanted)
            if indices[0] == 0 or indices[-1] >= sent_at.size:
                continue
            candidate = sent_db[indices]
            if np.ptp(candidate) < 6.0 or not np.any(candidate > SPEECH_DB):
                continue
            correlation = float(np.corrcoef(candidate, heard_db)[0, 1])
            if correlation > best:
                best, best_delay, best_levels = correlation, float(delay), candidate
        if best >= MATCH:
            # The shapes agree; so must the loudness. A user's word over the echo can make
            # the envelope follow the agent's for a moment: the newest frames are then far
            # louder than the echo path (known, or measured on the rest of the window) lets
            # the agent's voice come back.
            speaking = best_levels[:-RECENT_FRAMES] > SPEECH_DB
            if np.count_nonzero(speaking) >= 2 * RECENT_FRAMES:
                older_heard, older_sent = heard_db[:-RECENT_FRAMES], best_levels[:-RECENT_FRAMES]
            else:  # an onset: the window is the echo's first syllable and nothing else
                speaking = best_levels > SPEECH_DB
                older_heard, older_sent = heard_db, best_levels
            loss = float(np.median(older_heard[speaking] - older_sent[speaking]))
            known = self._fresh_path(heard_at)
            expected_loss = known[1] if known is not None else loss
            residual = _residual(
                heard_db[-RECENT_FRAMES:], best_levels[-RECENT_FRAMES:] + expected_loss
            )
            if loss > -MIN_LOSS_DB:
                log.debug(
                    "echo: correlation %.2f at %.0f ms, but only %.0f dB down: the user",
                    best,
                    best_delay * 1000,
                    -loss,
                )
                return False
            if float(np.max(residual)) >= RESIDUAL_DB:
                log.debug(
                    "echo: correlation %.2f at %.0f ms, but %.0f dB louder than its echo",
                    best,
                    best_delay * 1000,
                    float(np.max(residual)),
                )
                return False
            self.matches += 1
            self._path = (best_delay, loss, heard_at)
            log.debug(
                "echo: correlation %.2f at %.0f ms, %.0f dB down",
                best,
                best_delay * 1000,
                -loss,
            )
            return True
        if self._explained(heard_db, heard_at_frames, heard_at, sent_at, sent_db):
            self.predicted += 1
            return True
        if log.isEnabledFor(logging.DEBUG):
            spoken = sent_at[sent_db > SPEECH_DB]
            log.debug(
                "echo: none (best correlation %.2f at %.0f ms; agent speech sent %.0f to %.0f"
                " ms before; levels %s)",
                best,
                best_delay * 1000,
                (heard_at - spoken[0]) * 1000,
                (heard_at - spoken[-1]) * 1000,
                np.round(heard_db[-8:]).astype(int).tolist(),
            )
        return False

    def _delays(self, heard_at: float) -> npt.NDArray[np.float64]:
        """The round trips to search: all of them, or near the known path's. Once the path
        is known, a user's voice can only be taken for echo where the echo actually is (not
        for the agent's words of most of a second ago, after it paused)."""
        path = self._fresh_path(heard_at)
        if path is None:
            return np.arange(MIN_DELAY_S, MAX_DELAY_S, HOP_S)
        low = max(MIN_DELAY_S, path[0] - PATH_DRIFT_S)
        return np.arange(low, min(MAX_DELAY_S, path[0] + PATH_DRIFT_S) + HOP_S / 2, HOP_S)

    def _fresh_path(self, heard_at: float) -> tuple[float, float, float] | None:
        if self._path is not None and heard_at - self._path[2] > PATH_FRESH_S:
            self._path = None
        return self._path

    def _explained(
        self,
        heard_db: npt.NDArray[np.float64],
        heard_at_frames: npt.NDArray[np.float64],
        heard_at: float,
        sent_at: npt.NDArray[np.float64],
        sent_db: npt.NDArray[np.float64],
    ) -> bool:
        """Is the newest window no louder than the known echo path predicts?"""
        path = self._fresh_path(heard_at)
        if path is None:
            return False
        delay, loss, _ = path
        wanted = heard_at_frames[-RECENT_FRAMES:] - delay
        indices = np.searchsorted(sent_at, wanted)
        if indices[0] == 0 or indices[-1] >= sent_at.size:
            return False
        if not np.any(sent_db[indices] > SPEECH_DB):
            return False  # the agent said nothing then: nothing to come back
        residual = _residual(heard_db[-RECENT_FRAMES:], sent_db[indices] + loss)
        return bool(np.max(residual) < RESIDUAL_DB)


def _residual(
    heard_db: npt.NDArray[np.float64], predicted_db: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """How much louder each heard frame is than the echo predicted for it; a prediction
    below `QUIET_DB` counts as `QUIET_DB` (a gap in the agent's voice leaves the codec's and
    the room's tail, no user's word is that quiet)."""
    residual: npt.NDArray[np.float64] = heard_db - np.maximum(predicted_db, QUIET_DB)
    return residual


ONE_WORD_SPAN = 4
"""The agent's last words (of `agent_recent`, the estimated cut and what was sent just past
it) that a one-word echo may repeat, letter for letter."""

FLOOR_WORDS = frozenset(
    ["stop", "wait", "no", "what", "hold", "hey", "sorry", "actually", "excuse", "pardon"]
)
"""One word that takes the turn whatever the agent just said: never taken for its echo."""


def echoes_agent(
    transcript: str, agent_recent: str, *, sound_over: bool = True, similarity: float = 0.8
) -> bool:
    """Do the words heard over the agent repeat what it has just said? The backstop for echo
    the envelope test let through (for the barge-in judge). Whisper hears a quiet, garbled
    copy as other words ("air planes" for "airplanes", "and splice" for "and spice"), so the
    letters of the transcript are compared with those of the stretch of `agent_recent` (the
    last words the agent played) that resembles them most. One word resembles some stretch
    by chance too easily ("sorry" and "history"), so a single word is echo only when it is
    one of the agent's last `ONE_WORD_SPAN` words exactly, and not a word that takes the
    floor (`FLOOR_WORDS`), and only once the sound is over (`sound_over`): the turns
    benchmark's echo of a reply that began "My favorite book" came back as "my", and stopped
    the agent, but a user who starts "My question is" says the agent's last word too."""
    heard_words = _words(transcript)
    said = _words(agent_recent)
    if not heard_words or not said:
        return False
    if len(heard_words) == 1:
        word = heard_words[0]
        return sound_over and word not in FLOOR_WORDS and word in said[-ONE_WORD_SPAN:]
    heard = "".join(heard_words)
    best = 0.0
    for size in range(max(1, len(heard_words) - 1), len(heard_words) + 2):
        for start in range(0, max(1, len(said) - size + 1)):
            stretch = "".join(said[start : start + size])
            best = max(best, difflib.SequenceMatcher(None, heard, stretch).ratio())
    return best >= similarity


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c == "'" else " " for c in text).split()
