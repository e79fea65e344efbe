"""Running blocking model work in worker threads from asyncio, with cancellation that waits
for the worker to notice: a cancelled turn must not leave a thread still using a model."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import ParamSpec, TypeVar

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
