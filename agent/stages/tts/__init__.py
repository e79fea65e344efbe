"""Text to speech behind one small interface, so the turn does not care which engine speaks."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from agent.audio import Int16Array

URGENT_AHEAD_S = 1.0
"""A chunk is urgent while less than this much of the reply's audio waits ahead of it: the
listener would hear silence unless it is ready soon (the reply's first chunk always is).
Later chunks have the earlier ones' audio to be written in, and are spoken beside the LLM."""

LEADING_SILENCE = 500
"""Samples quieter than this (of 32767) before a reply's first sound are cut: Piper starts
every utterance with tens of milliseconds of near-silence."""
LEAD_KEEP_S = 0.01


class Synthesizer(Protocol):
    """Blocking synthesis, called from a worker thread: one chunk of text in, mono int16 PCM
    at `sample_rate` out."""

    @property
    def sample_rate(self) -> int: ...

    def synthesize(self, text: str, *, urgent: bool = False) -> Int16Array:
        """`urgent`: the listener waits in silence for this chunk (`URGENT_AHEAD_S`); an
        engine may give it more of the machine."""
        ...


def trim_leading_silence(pcm: Int16Array, sample_rate: int) -> Int16Array:
    """`pcm` from `LEAD_KEEP_S` before its first sample louder than `LEADING_SILENCE`."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LEADING_SILENCE)
    if loud.size == 0:
        return pcm[:0]
    start = max(0, int(loud[0]) - round(LEAD_KEEP_S * sample_rate))
    return pcm[start:]
