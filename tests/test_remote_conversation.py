"""Conversations over WebRTC whose replies come from a real inference server: a real aiortc
client speaks espeak-ng speech to the app (tiny synthetic STT and voice) whose language
model is llama_cpp.server on SmolLM2, behind the fault proxy (tests/llm_proxy.py).
Barge-in closes the server's stream; each fault of a remote server (down, refusing, slow,
stalling, cut short, malformed) gives that turn a clear `error`, the session keeps
listening and answers the next turn, and other sessions are untouched; a server down at
start stops `voice-agent serve` with a clear message."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio

from agent.app.runtime import Runtime
from agent.audio import Int16Array
from agent.config import AppConfig, ConversationConfig, ModelConfig
from agent.dialogue.conversation import Conversation
from agent.stages.llm.remote import RemoteChatModel
from benchmarks.corpus import espeak
from benchmarks.peer import AgentClient
from tests.conftest import RunningServer, ServerFactory
from tests.llm_proxy import Fault, FaultPlan, LlmProxy
from tests.llm_server import DISCONNECTED, LlamaServer, free_port, wait_for_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STAGE_TIMEOUT_S = 6.0
"""Long enough for a first token on a busy 2-core machine (the server shares its cores)."""


@pytest_asyncio.fixture
async def remote_runtime(tiny_models: Path, llm_proxy: LlmProxy) -> AsyncIterator[Runtime]:
    """Tiny STT and voice, SmolLM2 behind the proxy. Named before `start_server`, so that
    the server closes its sessions before the runtime closes."""
    config = AppConfig(
        models=ModelConfig(
            models_dir=tiny_models, profile="tiny", offline=True, llm_url=llm_proxy.url
        ),
        # No reply prepared in a pause: a fault the proxy injects into a prepared reply the
        # user talks into is (rightly) never seen, so which request meets it would depend on
        # espeak's comma pause.
        conversation=ConversationConfig(
            max_reply_tokens=24, stage_timeout_s=STAGE_TIMEOUT_S, speculate=False
        ),
    )
    runtime = await Runtime.load(config)
    yield runtime
    await runtime.aclose()


@pytest.fixture
def speech(tmp_path: Path) -> tuple[Int16Array, int]:
    return espeak("Hello, how are you today?")


def say(client: AgentClient, speech: tuple[Int16Array, int]) -> int:
    """Speak one utterance and a second of silence; returns the event index before it."""
    since = len(client.events)
    pcm, rate = speech
    client.mic.play(pcm, rate)
    client.mic.play(np.zeros(rate, dtype=np.int16), rate)
    return since


async def turn_outcome(client: AgentClient, since: int) -> dict[str, Any]:
    return await client.wait_for_event(
        lambda e: e["type"] in ("error", "turn_metrics"), timeout=40, since=since
    )


async def connected(server: RunningServer) -> tuple[AgentClient, Conversation]:
    client = AgentClient(server.url)
    await client.connect()
    await client.wait_channel_open()
    session = server.sessions.get(client.session_id or "")
    assert session is not None and isinstance(session.sink, Conversation)
    return client, session.sink


def affinity_of(runtime: Runtime, conversation: Conversation) -> str:
    assert isinstance(runtime.chat, RemoteChatModel)
    return runtime.chat.affinity_key(conversation.history)


async def test_replies_come_from_the_server_and_health_names_it(
    remote_runtime: Runtime,
    start_server: ServerFactory,
    llm_proxy: LlmProxy,
    speech: tuple[Int16Array, int],
) -> None:
    server = await start_server(pipeline=remote_runtime)
    client, conversation = await connected(server)
    try:
        since = say(client, speech)
        metrics = await turn_outcome(client, since)
        assert metrics["type"] == "turn_metrics", metrics
        assert metrics["llm_first_token_ms"] is not None and metrics["prompt_tokens"] > 0
        texts = "".join(e.data["delta"] for e in client.events if e.data["type"] == "agent_text")
        assert texts.strip()
        key = affinity_of(remote_runtime, conversation)
        (request,) = llm_proxy.chat_requests(key)
        assert request.status == 200 and request.body is not None
        assert request.body["messages"][-1]["role"] == "user"
        assert conversation.history.messages[-1]["role"] == "assistant"
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/health") as response:
            llm = (await response.json())["models"]["llm"]
        assert llm["backend"] == "remote" and llm["url"] == llm_proxy.url
    finally:
        await client.close()


async def test_talking_over_the_agent_closes_the_server_stream(
    remote_runtime: Runtime,
    start_server: ServerFactory,
    llm_proxy: LlmProxy,
    llama_server: LlamaServer,
    tmp_path: Path,
) -> None:
    server = await start_server(pipeline=remote_runtime)
    question, rate = espeak("Tell me a long story about the sea.")
    interruption, _ = espeak("Wait a moment please, I have another question.")
    client, conversation = await connected(server)
    # A long reply: the server is still generating it when the user talks over it.
    llm_proxy.plans.append(
        FaultPlan(Fault.LONG_REPLY, key=affinity_of(remote_runtime, conversation))
    )
    disconnects = llama_server.log().count(DISCONNECTED)
    try:
        client.mic.play(question, rate)
        client.mic.play(np.zeros(rate // 2, dtype=np.int16), rate)
        await client.wait_for_event("agent_text", timeout=40, since=0)
        client.mic.play(interruption, rate)
        client.mic.play(np.zeros(rate, dtype=np.int16), rate)
        interrupted = await client.wait_for_event("interrupted", timeout=30, since=0)
        assert not any(e.data["type"] == "turn_metrics" for e in client.events), "reply ended"
        async with asyncio.timeout(5):
            while not llm_proxy.client_gone:
                await asyncio.sleep(0.02)
        await wait_for_log(llama_server, DISCONNECTED, disconnects + 1)
        assert llm_proxy.client_gone[0].faulted is Fault.LONG_REPLY
        assert interrupted["false_interruption"] is False
    finally:
        await client.close()


CASES: dict[str, tuple[FaultPlan | None, str]] = {
    "down": (None, "cannot reach the LLM server"),
    "refused-twice": (
        FaultPlan(Fault.REFUSE, status=503, retry_after="0.5", times=2),
        "answered 503 again, after one retry",
    ),
    "429-long-retry-after": (
        FaultPlan(Fault.REFUSE, status=429, retry_after="30"),
        "asks to retry after 30 s",
    ),
    "slow-first-token": (
        FaultPlan(Fault.SLOW_FIRST_TOKEN, seconds=STAGE_TIMEOUT_S + 5),
        "StageTimeout: no token for 6 s",
    ),
    "stall-mid-stream": (
        FaultPlan(Fault.STALL, after_events=2),
        "StageTimeout: no token for 6 s",
    ),
    "closed-early": (FaultPlan(Fault.CLOSE_EARLY, after_events=2), "stream broke off"),
    "malformed-chunk": (FaultPlan(Fault.CORRUPT, after_events=1), "malformed chunk"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_server_fault_is_an_error_and_the_next_turn_is_answered(
    remote_runtime: Runtime,
    start_server: ServerFactory,
    llm_proxy: LlmProxy,
    speech: tuple[Int16Array, int],
    case: str,
) -> None:
    plan, message = CASES[case]
    server = await start_server(pipeline=remote_runtime)
    client, conversation = await connected(server)
    try:
        if plan is None:
            await llm_proxy.stop()
        else:
            plan.key = affinity_of(remote_runtime, conversation)
            llm_proxy.plans.append(plan)
        since = say(client, speech)
        await client.wait_for_event("user_speech_end", timeout=30, since=since)
        ended_at = time.monotonic()
        error = await turn_outcome(client, since)
        assert error["type"] == "error", error
        assert error["message"].startswith("language model failed: "), error
        assert message in error["message"], error
        if "StageTimeout" in message:
            assert time.monotonic() - ended_at < STAGE_TIMEOUT_S + 3.0
        if plan is None:
            await llm_proxy.start()  # the server is back, on the same address
        since = say(client, speech)
        answer = await turn_outcome(client, since)
        assert answer["type"] == "turn_metrics", answer
        assert server.sessions.get(client.session_id or "") is not None
    finally:
        await client.close()


async def test_a_stalled_stream_leaves_other_sessions_untouched(
    remote_runtime: Runtime,
    start_server: ServerFactory,
    llm_proxy: LlmProxy,
    speech: tuple[Int16Array, int],
) -> None:
    server = await start_server(pipeline=remote_runtime)
    faulty, faulty_conversation = await connected(server)
    healthy, _ = await connected(server)
    llm_proxy.plans.append(
        FaultPlan(Fault.STALL, key=affinity_of(remote_runtime, faulty_conversation), after_events=1)
    )
    try:
        faulty_since, healthy_since = say(faulty, speech), say(healthy, speech)
        failed, answered = await asyncio.gather(
            turn_outcome(faulty, faulty_since), turn_outcome(healthy, healthy_since)
        )
        assert failed["type"] == "error" and "StageTimeout" in failed["message"], failed
        assert answered["type"] == "turn_metrics", answered
        assert not [e for e in healthy.events if e.data["type"] in ("error", "closing")]
    finally:
        for client in (faulty, healthy):
            await client.close()


def test_serve_exits_with_a_clear_message_when_the_server_is_down(tiny_models: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    command = [
        sys.executable, "-m", "agent", "serve",
        "--models", str(tiny_models), "--profile", "tiny", "--offline",
        "--port", str(free_port()), "--llm-url", url,
    ]  # fmt: skip
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert f"voice-agent: cannot reach the LLM server at {url}" in result.stderr
    assert "ready" not in result.stdout
