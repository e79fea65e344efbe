"""llama-cpp-python's own OpenAI-compatible server (`llama_cpp.server`, the `server` extra) as
a child process of the tests, on a free port, with its log kept for assertions.

`python -m tests.llm_server ARGS` is `python -m llama_cpp.server ARGS` with llama.cpp's
weight repacking into extra buffer types off (`use_extra_bufts`, llama.cpp's `--no-repack`).
Some virtual machines advertise Intel AMX without letting a process use it: on them the AMX
repacking of Q4_1 weights (SmolLM2's) dies with SIGILL on the first token. Repacking is a
CPU-kernel layout optimisation; the server, its HTTP API and its streaming are unchanged.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.llm_proxy import LlmProxy

READY_TIMEOUT_S = 60.0
SMOLLM = Path("smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf")
DISCONNECTED = "Disconnected from client"
"""What llama_cpp.server prints when the client of a stream it is generating goes away."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    model: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_llama_server(model: Path, log_path: Path, *, n_ctx: int = 2048) -> LlamaServer:
    """Start the server on `model` and wait until it lists it; raises RuntimeError with the
    server's log when it does not come up."""
    if not model.is_file():
        raise RuntimeError(f"no GGUF at {model}")
    port = free_port()
    command = [
        sys.executable, "-m", "tests.llm_server",
        "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx),
        # One thread each: llama.cpp's threads spin-wait for each other, and this server
        # shares a small machine with the agent under test (see loaders.shared_threads).
        "--n_threads", "1", "--n_threads_batch", "1",
        # One request at a time, each to its end: by default a new request cuts the one
        # streaming (`interrupt_requests`), which would end other sessions' replies.
        "--interrupt_requests", "False",
        "--verbose", "False",
    ]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},  # its prints reach the log at once
        )
    server = LlamaServer(process, port, log_path, model)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited ({process.returncode}):\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/models", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"llama_cpp.server not ready in {READY_TIMEOUT_S:g} s:\n{server.log()}")


# Fixtures: a test module that needs them imports them by name.


@pytest.fixture(scope="session")
def llama_server(
    small_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """llama_cpp.server on SmolLM2-135M, one per test module that imports it."""
    server = start_llama_server(
        small_models / SMOLLM, tmp_path_factory.mktemp("llm") / "llama_cpp.server.log"
    )
    yield server
    server.stop()


@pytest_asyncio.fixture
async def llm_proxy(llama_server: LlamaServer) -> AsyncIterator[LlmProxy]:
    """The fault proxy in front of `llama_server`."""
    proxy = LlmProxy(f"http://127.0.0.1:{llama_server.port}")
    await proxy.start()
    yield proxy
    await proxy.aclose()


async def wait_for_log(server: LlamaServer, text: str, count: int, timeout: float = 10) -> None:
    """Until the server's log holds `text` at least `count` times."""
    import asyncio

    async with asyncio.timeout(timeout):
        while server.log().count(text) < count:
            await asyncio.sleep(0.05)


def main() -> None:
    from llama_cpp.server.__main__ import main as serve

    from agent.stages.llm.llama_internals import without_repacking

    with without_repacking():
        serve()


if __name__ == "__main__":
    main()
