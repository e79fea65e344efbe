"""`voice-agent serve`: load the models, start the app, stop cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from agent.config import AppConfig
from agent.models import ModelError
from agent.runtime import Runtime
from signaling.app import create_app

log = logging.getLogger(__name__)


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
        log.info("shutting down")
    finally:
        await runner.cleanup()
        runtime.close()
    return 0
