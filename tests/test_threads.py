"""agent.threads: a cancelled caller waits for its worker, and never loses the cancel."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent.threads import CountingExecutor, run_in, wait_uncancelled


async def test_a_cancel_in_the_same_loop_turn_as_the_result_is_not_lost() -> None:
    """The race the soak found: the worker's result and the cancel arrive together. The
    cancel must win, or a cancelled listener loops on and its session never closes."""
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiter = asyncio.create_task(wait_uncancelled(future))
    await asyncio.sleep(0)  # the waiter now awaits the shielded future
    future.set_result(1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_cancellation_waits_for_the_worker_then_is_raised() -> None:
    release = threading.Event()
    finished = threading.Event()

    def work() -> int:
        release.wait(5)
        finished.set()
        return 1

    with ThreadPoolExecutor(1) as executor:
        task = asyncio.create_task(run_in(executor, work))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done(), "the cancel must wait for the worker"
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished.is_set()


async def test_a_counting_executor_is_busy_while_a_call_is_queued_or_running() -> None:
    """What the LLM asks before it takes every core for a prompt: a call running, one
    queued behind it, and one cancelled before it started (which must not count forever)."""
    pool = CountingExecutor(1, thread_name_prefix="test")
    release = threading.Event()
    try:
        assert not pool.busy
        running = pool.submit(release.wait)
        queued = pool.submit(lambda: None)
        assert pool.busy
        assert queued.cancel()
        release.set()
        running.result(timeout=5)
        assert not pool.busy
        assert await run_in(pool, lambda: pool.busy)  # busy from inside its own call
        assert not pool.busy
    finally:
        release.set()
        pool.shutdown(wait=True)
