"""Text to speech behind one small interface, so the turn does not care which engine speaks."""

from __future__ import annotations

from typing import Protocol

from agent.audio import Int16Array

URGENT_AHEAD_S = 1.0
"""A chunk is urgent while less than this much of the reply's audio waits ahead of it: the
listener would hear silence unless it is ready soon (the reply's first chunk always is).
Later chunks have the earlier ones' audio to be written in, and are spoken beside the LLM."""


class Synthesizer(Protocol):
    """Blocking synthesis, called from a worker thread: one chunk of text in, mono int16 PCM
    at `sample_rate` out."""

    @property
    def sample_rate(self) -> int: ...

    def synthesize(self, text: str, *, urgent: bool = False) -> Int16Array:
        """`urgent`: the listener waits in silence for this chunk (`URGENT_AHEAD_S`); an
        engine may give it more of the machine."""
        ...
