"""What the soak and load harnesses (and the offer fuzzer) share: a server config that lets
one address open many sessions, the app served in this process or launched as a child,
snapshots of a process's resources, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import statistics
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from agent.app.pipeline import Pipeline
from agent.config import AppConfig
from signaling.app import SESSIONS_KEY, create_app
from signaling.sessions import SessionRegistry

ONE_ADDRESS_FLAGS = ("--max-sessions-per-ip", "0", "--offer-rate", "0")
"""Every harness client connects from 127.0.0.1: the per-address cap and offer rate limit
that protect a public server would refuse it long before the global cap is reached. These
flags lift both (0: no cap, no rate limit); `one_address_config` does the same in-process."""


def write_results(out: Path, data: dict[str, Any], summary: str) -> None:
    """`results.json` and `summary.md` in `out`, and the summary on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "summary.md").write_text(summary)
    print(summary)


def one_address_config(config: AppConfig) -> AppConfig:
    """`config` without the per-address limits (see ONE_ADDRESS_FLAGS)."""
    server = replace(config.server, max_sessions_per_ip=0, offer_rate_per_min=0.0)
    return replace(config, server=server)


@dataclass(frozen=True)
class Served:
    url: str
    sessions: SessionRegistry


@contextlib.asynccontextmanager
async def served(config: AppConfig, pipeline: Pipeline) -> AsyncIterator[Served]:
    """The real app on a free loopback port of this process, torn down on exit."""
    app = create_app(config, pipeline)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield Served(f"http://127.0.0.1:{runner.addresses[0][1]}", app[SESSIONS_KEY])
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Launched:
    url: str
    process: psutil.Process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def launched(
    serve_args: Sequence[str],
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    token: str | None = None,
) -> AsyncIterator[Launched]:
    """`voice-agent serve` as a child process (on a free loopback port unless told), with
    ONE_ADDRESS_FLAGS, ready before the body runs and stopped with SIGTERM after it. The
    command is printed and written at the top of its log exactly as it runs; a token goes
    through VOICE_AGENT_TOKEN, out of the command line."""
    port = port or free_port()
    command = [
        sys.executable, "-m", "agent", "serve", "--host", host, "--port", str(port),
        *ONE_ADDRESS_FLAGS, *serve_args,
    ]  # fmt: skip
    env = dict(os.environ)
    shown = shlex.join(command)
    if token is not None:
        env["VOICE_AGENT_TOKEN"] = token
        shown = f"VOICE_AGENT_TOKEN=... {shown}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting the server: {shown}; its log: {log_path}", file=sys.stderr)
    with log_path.open("wb") as log:
        log.write(f"# {shown}\n".encode())
        log.flush()
        child = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=log, env=env
        )
        try:
            assert child.stdout is not None
            async with asyncio.timeout(600):
                while b"ready" not in (line := await child.stdout.readline()):
                    if not line:
                        raise RuntimeError(
                            f"the server exited ({await child.wait()}); see {log_path}"
                        )
            yield Launched(f"http://{host}:{port}", psutil.Process(child.pid))
        finally:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(30):
                        await child.wait()
                except TimeoutError:
                    child.kill()
                    await child.wait()


@dataclass(frozen=True)
class ProcessSnapshot:
    rss_mb: float
    threads: int
    fds: int
    tasks: int | None
    """asyncio tasks of the running loop, when taken from inside the process."""
    python_threads: tuple[str, ...] = ()
    """Names of the Python threads, when taken from inside the process: which pool grew."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshot(process: psutil.Process | None = None) -> ProcessSnapshot:
    process = process or psutil.Process(os.getpid())
    own = process.pid == os.getpid()
    tasks = None
    if own:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # no running loop
            tasks = None
    return ProcessSnapshot(
        rss_mb=round(process.memory_info().rss / 2**20, 2),
        threads=process.num_threads(),
        fds=process.num_fds(),
        tasks=tasks,
        python_threads=tuple(sorted(t.name for t in threading.enumerate())) if own else (),
    )


def cpu_seconds(process: psutil.Process) -> float:
    """User plus system CPU time of every thread of the process so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: list[float], digits: int = 2) -> dict[str, float]:
    """n, median, p90, p99 and max."""
    return {
        "n": len(values),
        "median": round(statistics.median(values), digits),
        "p90": round(percentile(values, 90), digits),
        "p99": round(percentile(values, 99), digits),
        "max": round(max(values), digits),
    }


__all__ = [
    "ONE_ADDRESS_FLAGS",
    "Launched",
    "ProcessSnapshot",
    "Served",
    "cpu_seconds",
    "launched",
    "one_address_config",
    "percentile",
    "served",
    "snapshot",
    "summarize",
]
