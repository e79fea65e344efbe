"""Ends of sessions and of the server: a client that vanishes mid-turn is cleaned up by the
keepalive, a draining server refuses offers with 503, and SIGTERM ends a real `voice-agent
serve` process cleanly while a real client is talking to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection

from agent.app.runtime import Runtime
from agent.config import AppConfig, ConversationConfig, ModelConfig
from agent.transport.session import Session
from benchmarks.corpus import espeak, write_wav
from benchmarks.harness import free_port
from benchmarks.peer import AgentClient
from signaling.sessions import SessionRegistry
from tests.conftest import ServerFactory

REPO = Path(__file__).resolve().parent.parent

# A client in a process of its own, so that it can vanish the hard way (SIGKILL): no hang-up,
# no DTLS or SCTP goodbye, no more pings or media. It prints every event it receives.
VANISHING_CLIENT = """
import asyncio, json, sys, wave
import numpy as np
from benchmarks.peer import AgentClient

async def main() -> None:
    client = AgentClient(sys.argv[1], ping_interval_s=0.25)
    await client.connect()
    await client.wait_channel_open()
    with wave.open(sys.argv[2], "rb") as f:
        rate = f.getframerate()
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
    client.mic.play(pcm, rate)
    client.mic.play(np.zeros(rate, dtype=np.int16), rate)
    print(json.dumps({"type": "connected", "session_id": client.session_id}), flush=True)
    seen = 0
    while True:
        await client.wait_for_event(lambda e: True, timeout=120, since=seen)
        for event in client.events[seen:]:
            print(json.dumps(event.data), flush=True)
        seen = len(client.events)

asyncio.run(main())
"""


async def read_events_until(
    proc: asyncio.subprocess.Process, kind: str, timeout: float
) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not events or events[-1]["type"] != kind:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(f"the client exited before {kind!r}: {events}")
            events.append(json.loads(line))
    return events


@pytest_asyncio.fixture
async def runtime(tiny_models: Path) -> AsyncIterator[Runtime]:
    config = AppConfig(
        models=ModelConfig(models_dir=tiny_models, profile="tiny", offline=True),
        conversation=ConversationConfig(max_reply_tokens=48),
    )
    loaded = await Runtime.load(config)
    yield loaded
    loaded.close()


def session_tasks(session_id: str) -> set[asyncio.Task[Any]]:
    """The tasks a session and its conversation run (one session in the test: the
    conversation's own tasks are named without the session id)."""
    return {
        task
        for task in asyncio.all_tasks()
        if session_id in task.get_name() or task.get_name().startswith(("listen", "turn-"))
    }


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_client_that_vanishes_mid_turn_is_cleaned_up_by_the_keepalive(
    runtime: Runtime,  # before the server: torn down after its sessions close
    start_server: ServerFactory,
    tmp_path: Path,
) -> None:
    keepalive_s = 1.5
    server = await start_server(pipeline=runtime, keepalive_timeout_s=keepalive_s)
    pcm, rate = espeak("Tell me a long story about the sea.")
    wav = tmp_path / "question.wav"
    write_wav(wav, pcm, rate)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        VANISHING_CLIENT,
        server.url,
        str(wav),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        # The end of the user's speech starts a turn: the client vanishes in the middle of it.
        events = await read_events_until(proc, "user_speech_end", timeout=60)
        session = server.sessions.get(events[0]["session_id"])
        assert session is not None
        tasks = session_tasks(session.id)
        assert any(t.get_name().startswith("turn-") for t in tasks), "a turn must be under way"
    finally:
        proc.kill()
        await proc.wait()
    killed_at = time.monotonic()
    async with asyncio.timeout(keepalive_s + 5):
        while len(server.sessions):
            await asyncio.sleep(0.02)
    gone_after = time.monotonic() - killed_at
    assert session.closed and (session.close_reason or "").startswith("no keepalive")
    # The last ping left up to 0.25 s before the kill; the watchdog looks every 0.375 s.
    assert gone_after < keepalive_s + 1.0, gone_after
    assert all(task.done() for task in tasks)
    assert not session_tasks(session.id)


async def test_a_draining_server_closes_its_sessions_and_refuses_offers(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    client = AgentClient(server.url)
    try:
        await client.connect()
        await client.wait_channel_open()
        await server.sessions.drain()
        assert len(server.sessions) == 0
        closing = await client.wait_for_event("closing", timeout=5, since=0)
        assert closing["reason"] == "server shutting down"
        offer = {"sdp": client.pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/offer", json=offer) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "5"
                assert "shutting down" in (await response.json())["error"]
            async with http.get(f"{server.url}/health") as response:
                assert response.status == 503  # load balancers stop sending visitors
                assert (await response.json())["status"] == "draining"
        assert len(server.sessions) == 0
    finally:
        await client.close()


async def test_a_session_answered_as_draining_began_is_closed_at_once() -> None:
    """An offer that passed the draining check before it began is answered after it: its
    session must not outlive the drain."""
    sessions = SessionRegistry(max_sessions=2)
    assert sessions.try_reserve("127.0.0.1") is None
    await sessions.drain()
    session = Session("late", RTCPeerConnection(), keepalive_timeout_s=10.0)
    sessions.add(session, "127.0.0.1")
    async with asyncio.timeout(5):
        await session.wait_closed()
        while len(sessions):
            await asyncio.sleep(0.01)
    assert session.close_reason == "server shutting down"


async def post_offers_until_refused(
    url: str, sdp: str, timeout: float
) -> list[tuple[int, str | None]]:
    """Offer sessions to a server that is shutting down, until it stops listening (or, if
    it never does, for `timeout` seconds)."""
    answers: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.post(f"{url}/offer", json={"sdp": sdp, "type": "offer"}) as r:
                    answers.append((r.status, r.headers.get("Retry-After")))
            except aiohttp.ClientConnectionError:
                return answers
            await asyncio.sleep(0.02)
    return answers


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigterm_drains_and_exits_cleanly(tiny_models: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "serve", "--models", str(tiny_models),
            "--profile", "tiny", "--offline", "--host", "127.0.0.1", "--port", str(port),
            "--max-reply-tokens", "48", "--offer-burst", "1000",  # 503s, not rate limits
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=log_file,
        )  # fmt: skip
    client = AgentClient(url)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(90):
            ready = await proc.stdout.readline()
        assert b"voice-agent is ready" in ready, log_path.read_text()
        await client.connect()
        await client.wait_channel_open()
        pcm, rate = espeak("What is the weather like today?")
        client.mic.play(pcm, rate)
        client.mic.play(np.zeros(rate, dtype=np.int16), rate)
        await client.wait_for_event("user_speech_end", timeout=60, since=0)  # a turn starts

        proc.send_signal(signal.SIGTERM)
        signalled_at = time.monotonic()
        answers = await post_offers_until_refused(url, client.pc.localDescription.sdp, 10)
        try:
            async with asyncio.timeout(10):
                code: int | None = await proc.wait()
        except TimeoutError:
            code = None
        exited_after = time.monotonic() - signalled_at
        with contextlib.suppress(TimeoutError):
            await client.wait_for_event("closing", timeout=5, since=0)
        closing = [e.data for e in client.events if e.data["type"] == "closing"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await client.close()
    log = log_path.read_text()
    assert code == 0, log
    assert exited_after < 5.0, exited_after
    assert [c["reason"] for c in closing] == ["server shutting down"]
    assert all(answer == (503, "5") for answer in answers), answers
    assert "shutdown complete" in log, log
    for bad in ("Task was destroyed but it is pending", "Traceback", "still running after"):
        assert bad not in log, log
