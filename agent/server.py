"""`voice-agent serve`: load the models, start the app, stop cleanly on SIGINT or SIGTERM.

Shutdown drains while the server still listens: new offers get 503 with Retry-After, every
live session is told `closing` and closed, then the app stops, the models are released and
any task still running is named in the log before it is cancelled."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from agent.config import AppConfig
from agent.models import ModelError
from agent.runtime import Runtime
from signaling.app import SESSIONS_KEY, create_app

log = logging.getLogger(__name__)

LEFTOVER_TASK_TIMEOUT_S = 5.0


async def serve(config: AppConfig) -> int:
    try:
        runtime = await Runtime.load(config)
    except ModelError as exc:
        print(f"voice-agent: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
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
        host = "localhost" if config.server.host in ("127.0.0.1", "::1") else config.server.host
        print(f"voice-agent is ready: open http://{host}:{config.server.port}/", flush=True)
        await stop.wait()
        log.info("shutting down: refusing new sessions, closing %d live", len(app[SESSIONS_KEY]))
        await app[SESSIONS_KEY].drain()
    finally:
        await runner.cleanup()
        runtime.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    await _end_leftover_tasks()
    log.info("shutdown complete")
    return 0


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
