"""Faults in a turn's model stages, injected into the real tiny models (tests/faults.py) and
driven by a real aiortc client: an error in each stage (the LLM's before its first token and
mid-stream), stages that hang past --stage-timeout, and a session closed after
--max-failed-turns failed turns in a row while another session keeps answering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from agent.audio import Int16Array
from agent.config import AppConfig, ConversationConfig, ModelConfig
from agent.dialogue.conversation import Conversation
from benchmarks.corpus import espeak
from benchmarks.peer import AgentClient
from tests.conftest import ServerFactory
from tests.faults import Fault, FaultScript, FaultyRuntime, SessionFaults

pytestmark = pytest.mark.slow

STAGE_TIMEOUT_S = 3.0


@pytest_asyncio.fixture
async def faulty_runtime(tiny_models: Path) -> AsyncIterator[FaultyRuntime]:
    config = AppConfig(
        models=ModelConfig(models_dir=tiny_models, profile="tiny", offline=True),
        # Short replies keep each turn's playout short. No reply is prepared in a pause: a
        # fault injected into a prepared reply the user talks into is (rightly) never seen,
        # which would make the call that meets the fault depend on espeak's comma pause.
        conversation=ConversationConfig(
            max_reply_tokens=16, stage_timeout_s=STAGE_TIMEOUT_S, speculate=False
        ),
    )
    runtime = await FaultyRuntime.load(config)
    assert isinstance(runtime, FaultyRuntime)
    yield runtime
    runtime.close()


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
        lambda e: e["type"] in ("error", "turn_metrics"), timeout=30, since=since
    )


FaultCase = tuple[Callable[[], SessionFaults], str, str]
CASES: dict[str, FaultCase] = {
    "stt-error": (
        lambda: SessionFaults(stt=FaultScript([Fault.ERROR])),
        "stt",
        "speech recognition",
    ),
    "stt-hang": (lambda: SessionFaults(stt=FaultScript([Fault.HANG])), "stt", "speech recognition"),
    "llm-error-before-first-token": (
        lambda: SessionFaults(llm=FaultScript([Fault.ERROR])),
        "llm",
        "language model",
    ),
    "llm-error-mid-stream": (
        lambda: SessionFaults(llm=FaultScript([Fault.ERROR], after_tokens=2)),
        "llm",
        "language model",
    ),
    "llm-hang-mid-stream": (
        lambda: SessionFaults(llm=FaultScript([Fault.HANG], after_tokens=2)),
        "llm",
        "language model",
    ),
    "tts-error": (lambda: SessionFaults(tts=FaultScript([Fault.ERROR])), "tts", "speech synthesis"),
    "tts-hang": (lambda: SessionFaults(tts=FaultScript([Fault.HANG])), "tts", "speech synthesis"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(CASES))
async def test_a_stage_fault_reports_an_error_and_the_next_turn_is_answered(
    faulty_runtime: FaultyRuntime,  # before the server: torn down after its sessions close
    start_server: ServerFactory,
    speech: tuple[Int16Array, int],
    case: str,
) -> None:
    make_plan, stage, stage_name = CASES[case]
    plan = make_plan()
    script: FaultScript = getattr(plan, stage)
    hang = script.faults == [Fault.HANG]
    faulty_runtime.plans = [plan]
    server = await start_server(pipeline=faulty_runtime)
    client = AgentClient(server.url)
    try:
        await client.connect()
        await client.wait_channel_open()
        since = say(client, speech)
        await client.wait_for_event("user_speech_end", timeout=30, since=since)
        ended_at = time.monotonic()
        error = await turn_outcome(client, since)
        waited = time.monotonic() - ended_at
        assert error["type"] == "error", error
        assert error["message"].startswith(f"{stage_name} failed: "), error
        if hang:
            assert "StageTimeout: no " in error["message"]
            assert script.hanging.is_set(), "the turn must fail while the worker is still stuck"
            assert waited < STAGE_TIMEOUT_S + 2.0, waited
        else:
            assert f"InjectedFault: injected {stage_name} fault" in error["message"]
        if case == "llm-error-mid-stream":
            # The turn saw tokens before the fault (the reply's text is shown per spoken
            # chunk, so two tokens need not have made an agent_text event yet).
            assert (script.tokens_before_fault or 0) >= 2, "the fault must come mid-stream"
        failed_turn = error["turn"]
        error_index = len(client.events)

        plan.release_all()
        session = server.sessions.get(client.session_id or "")
        assert session is not None and isinstance(session.sink, Conversation)
        conversation = session.sink
        async with asyncio.timeout(10):
            while conversation.abandoned_stages:
                await asyncio.sleep(0.02)
        assert script.hangs_ended == (1 if hang else 0)

        since = say(client, speech)
        answer = await turn_outcome(client, since)
        assert answer["type"] == "turn_metrics", answer
        assert server.sessions.get(client.session_id or "") is session
        late = [e.data for e in client.events[error_index:] if e.data.get("turn") == failed_turn]
        assert late == [], f"the failed turn went on after its error: {late}"
    finally:
        plan.release_all()
        await client.close()


@pytest.mark.timeout(180)
async def test_a_failing_session_is_closed_while_a_healthy_one_keeps_answering(
    faulty_runtime: FaultyRuntime,  # before the server: torn down after its sessions close
    start_server: ServerFactory,
    speech: tuple[Int16Array, int],
) -> None:
    # Three turns in a row, each failing in another stage (the default --max-failed-turns).
    plan = SessionFaults(
        stt=FaultScript([Fault.ERROR]),
        llm=FaultScript([Fault.ERROR]),
        tts=FaultScript([Fault.ERROR]),
    )
    faulty_runtime.plans = [plan, None]
    server = await start_server(pipeline=faulty_runtime)
    faulty, healthy = AgentClient(server.url), AgentClient(server.url)
    try:
        for client in (faulty, healthy):  # in this order: the first attached gets the plan
            await client.connect()
            await client.wait_channel_open()

        async def failing_turns() -> list[str]:
            messages = []
            for _ in range(3):
                since = say(faulty, speech)
                outcome = await turn_outcome(faulty, since)
                assert outcome["type"] == "error", outcome
                messages.append(outcome["message"])
            return messages

        async def answered_turns(n: int) -> None:
            for _ in range(n):
                since = say(healthy, speech)
                outcome = await turn_outcome(healthy, since)
                assert outcome["type"] == "turn_metrics", outcome

        async with asyncio.TaskGroup() as both:  # a failure in one cancels the other
            failing = both.create_task(failing_turns())
            both.create_task(answered_turns(2))
        assert [m.split(" failed:")[0] for m in failing.result()] == [
            "speech recognition",
            "language model",
            "speech synthesis",
        ]
        closing = await faulty.wait_for_event("closing", timeout=10, since=0)
        assert closing["reason"].startswith("3 turns in a row failed; last: speech synthesis")
        async with asyncio.timeout(10):
            while server.sessions.get(faulty.session_id or "") is not None:
                await asyncio.sleep(0.02)

        await answered_turns(1)  # after the faulty session is gone
        assert server.sessions.get(healthy.session_id or "") is not None
        assert not [e for e in healthy.events if e.data["type"] in ("error", "closing")]
        assert faulty_runtime.metrics.errors._value.get() == 3
    finally:
        plan.release_all()
        for client in (faulty, healthy):
            await client.close()
