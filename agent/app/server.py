"""`voice-agent serve`: load the models, start the app, stop cleanly on SIGINT or SIGTERM.

Shutdown drains while the server still listens: new offers get 503 with Retry-After, every
live session is told `closing` and closed, then the app stops, the models are released and
any task still running is named in the log before it is cancelled."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from urllib.parse import quote

from aiohttp import web

from agent.app.runtime import Runtime
from agent.config import AppConfig
from agent.config.checks import is_loopback_host
from agent.models import ModelError
from signaling.app import SESSIONS_KEY, create_app

log = logging.getLogger(__name__)

LEFTOVER_TASK_TIMEOUT_S = 5.0
FORCED_EXIT_CODE = 130


class ShutdownSignals:
    """The first SIGINT/SIGTERM asks for a clean drain; a second one, for an operator who
    will not wait (a model stuck in native code cannot be cancelled), exits at once."""

    def __init__(self, force_exit: Callable[[int], object] = os._exit) -> None:
        self.stop = asyncio.Event()
        self._force_exit = force_exit

    def received(self, sig: signal.Signals) -> None:
        if not self.stop.is_set():
            self.stop.set()
            return
        print(
            f"voice-agent: {sig.name} again during shutdown: exiting now, without waiting",
            file=sys.stderr,
            flush=True,
        )
        self._force_exit(FORCED_EXIT_CODE)


async def serve(config: AppConfig) -> int:
    try:
        runtime = await Runtime.load(config)
    except ModelError as exc:
        print(f"voice-agent: {exc}", file=sys.stderr)
        return 1
    signals = ShutdownSignals()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signals.received, sig)
    app = create_app(config, runtime)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.server.host, config.server.port)
        try:
            await site.start()
        except OSError as exc:
            print(
                f"voice-agent: cannot listen on {config.server.host}:{config.server.port}: "
                f"{exc.strerror}",
                file=sys.stderr,
            )
            return 1
        print(f"voice-agent is ready: open {page_url(config)}", flush=True)
        fallback = runtime.resolved.fallback
        if fallback is not None:
            print(
                f"  (serving the small models, LOW QUALITY, instead of {fallback.requested}: "
                f"{fallback.reason}; fetch the {fallback.requested} models with: "
                f"{fallback.command})",
                flush=True,
            )
        if not is_loopback_host(config.server.host):
            print(
                "  (browsers allow the microphone only on localhost or over HTTPS: put a "
                "TLS reverse proxy in front, see README, Running on a network)",
                flush=True,
            )
        await signals.stop.wait()
        log.info("shutting down: refusing new sessions, closing %d live", len(app[SESSIONS_KEY]))
        await app[SESSIONS_KEY].drain()
    finally:
        await runner.cleanup()
        await runtime.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    await _end_leftover_tasks()
    log.info("shutdown complete")
    return 0


def page_url(config: AppConfig) -> str:
    """The address to open: localhost for a loopback bind (a tokenless loopback server
    answers only loopback names), and the token in the query, where the page reads it."""
    server = config.server
    if is_loopback_host(server.host):
        host = "localhost"
    elif server.host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    else:
        host = f"[{server.host}]" if ":" in server.host else server.host
    query = f"?token={quote(server.token, safe='')}" if server.token else ""
    return f"http://{host}:{server.port}/{query}"


async def _end_leftover_tasks() -> None:
    """Every task the app started is owned and awaited by now; one that is not is a bug.
    Name it, then cancel it, so the process never ends with a task destroyed while pending."""
    current = asyncio.current_task()
    leftover = [task for task in asyncio.all_tasks() if task is not current]
    if not leftover:
        return
    log.warning(
        "%d task(s) still running after shutdown: %s",
        len(leftover),
        ", ".join(f"{task.get_name()} {task.get_coro()!r}" for task in leftover),
    )
    for task in leftover:
        task.cancel()
    await asyncio.wait(leftover, timeout=LEFTOVER_TASK_TIMEOUT_S)
