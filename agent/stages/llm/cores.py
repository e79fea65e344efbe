"""How the in-process LLM shares the CPU's cores with the other models of a reply.

Within a turn the models mostly run one after another (Whisper, then the LLM's first
clause, then its voice), and each is faster on every core: on the 2-core machine of
benchmarks/results/small, SmolLM2-135M (F16) wrote a token in 12 ms on two threads against
18 ms on one, and Piper (joe) spoke an eight-word clause in about 165 ms on two against
290 ms on one. But llama.cpp's threads spin-wait for each other: beside any other busy
model, a decode on every core stalls (a SmolLM2 prompt took 315 ms on both cores beside
a busy thread, 207 ms on one). So before each decode the LLM looks at what else runs: it
takes every core only while the other models are idle, and while the voice speaks a chunk
it waits (the chunk it waits on is already written, and its audio lasts far longer than
the next one takes to write), so that Piper has every core for it too; a generation waits
`VOICE_WAIT_BUDGET_S` in all at most, so that voices back to back cannot starve it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Flag(Protocol):
    """A turn's cancel, or its having enough of the reply (a `threading.Event`)."""

    def is_set(self) -> bool: ...


VOICE_POLL_S = 0.002
VOICE_WAIT_BUDGET_S = 1.0
"""The most one generation waits for the voice, in all: past it (a voice call stuck, or
several sessions' voices back to back, which would starve the LLM a token at a time) it
writes beside the voice on its own threads."""


@dataclass(frozen=True)
class CoreSharing:
    own_threads: int
    """Threads beside other busy models (the model's load-time setting)."""
    every_core: int
    others_idle: Callable[[], bool] = lambda: False
    """No other model (speech recognition, voice, end of turn) queued or running."""
    voice_busy: Callable[[], bool] | None = None
    """The voice is synthesizing on every core: wait for it. None: never wait (a voice on
    its own core, or on a GPU)."""

    def threads(self) -> int:
        """Threads for the next decode."""
        return self.every_core if self.others_idle() else self.own_threads

    def wait_for_voice(self, stop: Flag, budget_s: float) -> float:
        """Block (in the LLM's worker thread) while the voice synthesizes, for at most
        `budget_s`, or until `stop`; returns the seconds waited."""
        if self.voice_busy is None or budget_s <= 0 or not self.voice_busy():
            return 0.0
        started = time.monotonic()
        deadline = started + budget_s
        while self.voice_busy() and not stop.is_set() and time.monotonic() < deadline:
            time.sleep(VOICE_POLL_S)
        return time.monotonic() - started


__all__ = ["VOICE_WAIT_BUDGET_S", "CoreSharing", "Flag"]
