from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
from tests.package_index import LocalIndex, serve_index

REPO = Path(__file__).resolve().parent.parent


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


@pytest.fixture(scope="session")
def small_models() -> Path:
    """The real `small` profile from the package index, verified: Whisper base in
    `whisper-base/`, SmolLM2 in `smollm2-135m-instruct-q4_1/`, Piper joe in
    `piper-en_US-joe-medium/`, Smart Turn in `smart-turn-v3.2/`. tests/run-all.sh fetches
    it into .cache/models before pytest and later runs reuse it (VOICE_AGENT_TEST_MODELS
    points elsewhere); fetched here, through the same code, when it is missing."""
    from agent.models.pull import pull_profile
    from agent.models.registry import get_profile

    models = Path(os.environ.get("VOICE_AGENT_TEST_MODELS") or REPO / ".cache" / "models")
    pull_profile(get_profile("small"), models, progress=False)
    return models


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalIndex]:
    """A real package index on loopback, and pip configured to see it alone (through its
    environment, as a user's mirror would be), with a cache of its own."""
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    with serve_index(tmp_path / "index") as index:
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("PIP_INDEX_URL", index.simple_url)
        monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
        monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        yield index


@pytest.fixture(scope="session")
def _started_processes() -> list[str]:
    started: list[str] = []

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "subprocess.Popen":
            started.append(str(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed: one for the whole run
    return started


@pytest.fixture
def spawned(_started_processes: list[str]) -> list[str]:
    """The executables of the processes this test starts (Python's audit events)."""
    _started_processes.clear()
    return _started_processes


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
