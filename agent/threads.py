"""Running blocking model work in worker threads from asyncio, with cancellation that waits
for the worker to notice: a cancelled turn must not leave a thread still using a model."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def run_in(executor: Executor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in `executor`. If the caller is cancelled, the cancellation is
    raised only after the worker has finished, so its resources are free again."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    call = functools.partial(ctx.run, fn, *args, **kwargs)
    future = loop.run_in_executor(executor, call)
    return await wait_uncancelled(future)


async def wait_uncancelled(
    future: asyncio.Future[T], on_cancel: Callable[[], None] | None = None
) -> T:
    """Await `future` to completion even through cancellation, then re-raise the cancel.
    `on_cancel` runs at the first cancellation: it should tell the worker to stop early."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # A cancel that lands in the loop turn in which the worker finished still
            # counts: swallowing it left a cancelled listener waiting forever and its
            # session never closed (found by tests/test_soak.py).
            if not cancelled and not future.done() and on_cancel is not None:
                on_cancel()
            cancelled = True
    if cancelled:
        if not future.cancelled() and future.exception() is not None:
            future.exception()  # retrieved: the cancel takes precedence
        raise asyncio.CancelledError
    return future.result()


class CountingExecutor(ThreadPoolExecutor):
    """A thread pool that knows whether any of its calls is queued or running: the LLM
    takes every core for a prompt only while the other models are idle."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers, thread_name_prefix=thread_name_prefix)
        self._count_lock = threading.Lock()
        self._in_flight = 0

    @property
    def busy(self) -> bool:
        return self._in_flight > 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._count_lock:
            self._in_flight += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._done()
            raise
        # A done callback runs for a call cancelled before it started, too.
        future.add_done_callback(lambda _: self._done())
        return future

    def _done(self) -> None:
        with self._count_lock:
            self._in_flight -= 1
