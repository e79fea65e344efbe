from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiortc import RTCPeerConnection

from agent.app.pipeline import Pipeline
from agent.config import AppConfig, ServerConfig
from agent.config.env import parse_bool
from signaling.app import SESSIONS_KEY, create_app
from signaling.sessions import SessionRegistry
from tests.package_index import LocalIndex, serve_index

REPO = Path(__file__).resolve().parent.parent


def in_ci() -> bool:
    """CI sets CI=true (tests/run-all.sh too, unless told CI=false): there every test runs."""
    return parse_bool(os.environ.get("CI") or "false", "CI")


def _fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI a skipped test is a failed one: a missing tool must not make a test vanish."""
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a module skipped while it is collected (`pytest.importorskip`)."""
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())  # type: ignore[attr-defined]


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


__all__ = ["RunningServer", "ServerConfig", "in_ci"]
