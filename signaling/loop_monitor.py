"""Event-loop lag: a task that sleeps a fixed interval and records how much longer it slept.

Everything of the server shares one event loop: offers, every session's audio drain, the
playout pacing of every agent track, the data channels. A call that blocks the loop anywhere
delays all of them, and the user hears it as choppy or late audio. The oversleep of a task
that asks for a fixed nap is a direct measure of that delay, exported as a histogram in
/metrics so a load test (or an operator) can read its percentiles over any window.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aiohttp import web

DEFAULT_INTERVAL_S = 0.01
"""Short enough that a 20 ms stall (one audio frame) is seen at nearly its full length; at
100 wake-ups a second the monitor itself costs well under 1 % of a core."""


class Observer(Protocol):
    """What the monitor reports to: a prometheus_client Histogram fits."""

    def observe(self, amount: float) -> None: ...


class LoopLagMonitor:
    def __init__(self, observer: Observer, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._observer = observer

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asleep_at = loop.time()
            await asyncio.sleep(self.interval_s)
            self._observer.observe(max(0.0, loop.time() - asleep_at - self.interval_s))


AppContext = Callable[[web.Application], AsyncIterator[None]]


def watch_event_loop(
    observer: Observer | None, interval_s: float = DEFAULT_INTERVAL_S
) -> AppContext:
    """A cleanup context for `app.cleanup_ctx`: the monitor runs from startup and is
    cancelled and awaited at cleanup. Without an observer (an app with no pipeline, hence
    no metrics) there is nothing to report to, and nothing runs."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if observer is None:
            yield
            return
        monitor = LoopLagMonitor(observer, interval_s)
        task = asyncio.get_running_loop().create_task(monitor.run(), name="loop-lag-monitor")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return context


__all__ = ["DEFAULT_INTERVAL_S", "LoopLagMonitor", "watch_event_loop"]
