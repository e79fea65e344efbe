"""Deadlines for the model stages of a turn, and what happens to a stage that misses one.

A stage (transcribing the utterance, the LLM's stream, synthesizing one chunk) that makes
no progress for `timeout_s` fails its turn with `StageTimeout`. Its worker thread cannot be
killed: an STT or TTS call blocked in native code keeps its thread until it returns, and
the LLM stops only at its next token. So the turn does not wait for it. The stage's task is
cancelled (which tells the LLM to stop) and handed to the `StageRunner`, which owns it until
the worker returns and drops its late result. Meanwhile later calls to the same model queue
behind the stuck worker and time out in their turn if it stays stuck. A worker stuck for
good also keeps the process from exiting (Python joins worker threads at exit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class StageTimeout(TimeoutError):
    """A stage made no progress for the stage timeout."""


class Deadline:
    """When a stage's time runs out; a stage that reports progress gets a fresh timeout."""

    def __init__(self, timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.timeout_s = timeout_s
        self._at = self._loop.time() + timeout_s

    def extend(self) -> None:
        """The stage made progress (the LLM: a token): it has `timeout_s` from now."""
        self._at = self._loop.time() + self.timeout_s

    def remaining(self) -> float:
        return self._at - self._loop.time()


class StageRunner:
    """Runs one session's stages under deadlines and owns those it had to abandon."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._abandoned: set[asyncio.Task[Any]] = set()

    @property
    def abandoned(self) -> int:
        """Stages given up on whose workers have not returned yet."""
        return len(self._abandoned)

    def deadline(self) -> Deadline:
        return Deadline(self.timeout_s)

    async def run(
        self,
        stage: Coroutine[Any, Any, T],
        *,
        name: str,
        deadline: Deadline | None = None,
        waiting_for: str = "result",
    ) -> T:
        """Await `stage` until it finishes or its deadline passes (`StageTimeout`). If the
        caller is cancelled (barge-in), the stage is cancelled and awaited while its
        deadline lasts, so a healthy worker is done with its model when this returns."""
        deadline = deadline or self.deadline()
        task = asyncio.get_running_loop().create_task(stage, name=name)
        try:
            while not task.done():
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise StageTimeout(f"no {waiting_for} for {self.timeout_s:g} s")
                await asyncio.wait({task}, timeout=remaining)
        except BaseException:
            await self._stop(task, deadline)
            raise
        return task.result()

    async def _stop(self, task: asyncio.Task[Any], deadline: Deadline) -> None:
        if task.done():
            if not task.cancelled():
                task.exception()  # retrieved: the caller's own exception wins
            return
        task.cancel()
        try:
            remaining = deadline.remaining()
            if remaining > 0:
                await asyncio.wait({task}, timeout=remaining)
        finally:
            if not task.done():
                self._abandon(task)

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        log.warning("%s: worker still busy; abandoned, its result will be dropped", task.get_name())
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned_done)

    def _abandoned_done(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure of an abandoned stage is no news
        log.info("%s: abandoned worker returned", task.get_name())

    async def aclose(self) -> None:
        """Wait for abandoned stages' workers to return, at most `timeout_s` more: one stuck
        longer cannot be killed and is left to finish on its own."""
        pending = set(self._abandoned)
        if not pending:
            return
        _, stuck = await asyncio.wait(pending, timeout=self.timeout_s)
        if stuck:
            log.error(
                "%d stage worker(s) still stuck after %g s: %s",
                len(stuck),
                self.timeout_s,
                ", ".join(t.get_name() for t in stuck),
            )
