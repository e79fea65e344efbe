"""Text to speech behind one small interface, so the turn does not care which engine speaks."""

from __future__ import annotations

from typing import Protocol

from agent.audio import Int16Array


class Synthesizer(Protocol):
    """Blocking synthesis, called from a worker thread: one chunk of text in, mono int16 PCM
    at `sample_rate` out."""

    @property
    def sample_rate(self) -> int: ...

    def synthesize(self, text: str) -> Int16Array: ...
