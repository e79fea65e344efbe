from __future__ import annotations

import asyncio
import gc
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web
from aiortc import RTCPeerConnection

from agent.app.pipeline import Pipeline
from agent.audio import Int16Array
from agent.config import AppConfig, ServerConfig
from signaling.app import SESSIONS_KEY, create_app
from signaling.sessions import SessionRegistry

pytest_plugins = ["tests.llm_server"]  # llama_cpp.server and the fault proxy, as fixtures


@pytest_asyncio.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """Fail any test that leaves asyncio tasks running or peer connections open."""
    before = asyncio.all_tasks()
    yield
    me = asyncio.current_task()
    leaked: list[asyncio.Task[object]] = []
    for _ in range(100):
        leaked = [t for t in asyncio.all_tasks() if t not in before and t is not me]
        if not leaked:
            break
        await asyncio.sleep(0.02)
    open_pcs = [
        o
        for o in gc.get_objects()
        if type(o) is RTCPeerConnection and o.connectionState != "closed"
    ]
    for pc in open_pcs:
        await pc.close()
    assert not leaked, f"leaked tasks: {[t.get_name() + ' ' + repr(t.get_coro()) for t in leaked]}"
    assert not open_pcs, f"{len(open_pcs)} peer connection(s) left open"


@dataclass
class RunningServer:
    app: web.Application
    url: str

    @property
    def sessions(self) -> SessionRegistry:
        return self.app[SESSIONS_KEY]


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest_asyncio.fixture
async def start_server() -> AsyncIterator[ServerFactory]:
    """Start the real app on a free loopback port; everything is torn down after the test."""
    runners: list[web.AppRunner] = []

    async def start(
        config: AppConfig | None = None, pipeline: Pipeline | None = None, **server: object
    ) -> RunningServer:
        config = config or AppConfig()
        if server:
            config = replace(config, server=replace(config.server, **server))  # type: ignore[arg-type]
        app = create_app(config, pipeline)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return RunningServer(app, f"http://127.0.0.1:{port}")

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic model set, built once per test run."""
    from agent.models.synth import synthesize

    out = tmp_path_factory.mktemp("tiny-models")
    synthesize("tiny", out)
    return out


def espeak(text: str, tmp_path: Path, *, speed: int = 160) -> tuple[Int16Array, int]:
    """Speech made by espeak-ng: (int16 mono PCM, sample rate)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: run the README's test command")
    wav = tmp_path / f"espeak-{abs(hash(text))}.wav"
    subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(wav), text], check=True)
    import wave

    with wave.open(str(wav), "rb") as f:
        rate = f.getframerate()
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16).copy()
    return pcm, rate


__all__ = ["RunningServer", "ServerConfig", "espeak"]
