"""The private internals of aiortc, aioice and llama-cpp-python the agent relies on, kept in
agent/transport/aiortc_internals.py and agent/stages/llm/llama_internals.py: the installed
versions are the pinned ones they were verified against, and each access still finds what
it reads on real objects. A failure here names the feature a new version breaks."""

from __future__ import annotations

import asyncio
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection

from agent.config import ModelConfig
from agent.models.device import detect_device
from agent.models.loaders import load_llama
from agent.models.resolve import resolve_models
from agent.stages.llm import llama_internals
from agent.stages.llm.llama import ChatModel
from agent.transport import aiortc_internals
from agent.transport.rtc import close_peer
from tests.test_rtc import offer_answer

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
VERIFIED = {**aiortc_internals.VERIFIED, "llama-cpp-python": llama_internals.VERIFIED}
BREAKS = {
    "aiortc": "close_peer (orphan ICE consent and connect tasks), drain_channel (the last "
    "event before a close) and the ICE host-address filter",
    "aioice": "the ICE host-address filter and close_peer's consent-task cleanup",
    "llama-cpp-python": "prefix reuse between turns and the per-conversation saved contexts",
}


def pins() -> dict[str, str]:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    found = {}
    for spec in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*)", spec.split(";")[0].strip())
        if match:
            found[match[1]] = match[2]
    return found


@pytest.mark.parametrize("package", sorted(VERIFIED))
def test_the_verified_version_is_pinned_and_installed(package: str) -> None:
    verified = VERIFIED[package]
    assert pins().get(package) == verified, (
        f"pyproject.toml must pin {package}=={verified}: {BREAKS[package]} rely on its internals"
    )
    installed = metadata.version(package)
    assert installed == verified, (
        f"{package} {installed} is installed, but its internals were verified in {verified}: "
        f"check {BREAKS[package]} against the new version's source, then move the pin"
    )


async def test_aiortc_internals_find_what_they_read() -> None:
    caller, callee = await offer_answer()
    try:
        connecting = [
            t for t in asyncio.all_tasks() if aiortc_internals.is_connect_task_of(t, callee)
        ]
        assert connecting, "RTCPeerConnection.__connect is not found: close_peer cannot wait for it"
        transports = aiortc_internals.ice_transports(callee)
        assert transports, "RTCPeerConnection.__iceTransports is gone: orphan consent tasks leak"
        connection = aiortc_internals.ice_connection(transports[0])
        assert aiortc_internals.gathering_started(connection)
        channel = caller.createDataChannel("probe")
        async with asyncio.timeout(10):
            while callee.connectionState != "connected" or channel.readyState != "open":
                await asyncio.sleep(0.02)
        assert aiortc_internals.running_consent_task(connection) is not None, (
            "aioice's _query_consent_task is not found: close_peer cannot stop it"
        )
        channel.send("x" * 10_000)
        assert aiortc_internals.sctp_unacknowledged(channel), (
            "the SCTP queues are not found: drain_channel returns before the last event left"
        )
        async with asyncio.timeout(5):
            while aiortc_internals.sctp_unacknowledged(channel):
                await asyncio.sleep(0.01)
    finally:
        await close_peer(caller)
        await close_peer(callee)


async def test_the_address_filter_reaches_aioice_before_gathering() -> None:
    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("events")
        await pc.setLocalDescription(await pc.createOffer())
        gathered = aiortc_internals.ice_connection(pc.sctp.transport.transport.iceGatherer)
        assert aiortc_internals.gathering_started(gathered)
        fresh = RTCPeerConnection()
        try:
            await fresh.setRemoteDescription(pc.localDescription)
            assert fresh.sctp is not None
            connection = aiortc_internals.ice_connection(fresh.sctp.transport.transport.iceGatherer)
            assert not aiortc_internals.gathering_started(connection)
            offered: list[list[str]] = []

            def keep_none(addresses: list[str]) -> list[str]:
                offered.append(addresses)
                return []

            aiortc_internals.narrow_host_addresses(connection, keep_none)
            await fresh.setLocalDescription(await fresh.createAnswer())
            assert offered and offered[0], "aioice no longer passes its addresses through"
            assert "a=candidate" not in fresh.localDescription.sdp
        finally:
            await close_peer(fresh)
    finally:
        await close_peer(pc)


async def test_llama_internals_find_what_they_read(tiny_models: Path) -> None:
    resolved = resolve_models(ModelConfig(models_dir=tiny_models, profile="tiny", offline=True))
    llama = load_llama(resolved.llm, 768, detect_device("cpu"))
    chat = ChatModel(llama, max_reply_tokens=4, temperature=0.0)
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi."}]
    try:
        await chat.generate(list(messages), lambda _: None)
        prompt = chat.render(messages)
        evaluated = llama_internals.evaluated_tokens(llama).tolist()
        assert evaluated[: len(prompt)] == prompt, "input_ids/n_tokens: prefix reuse breaks"
        assert isinstance(llama_internals.token_text(llama, llama.token_eos()), str)
        assert llama_internals.context_pointer(llama), "_ctx.ctx: saved contexts break"
        assert isinstance(llama._requires_eval, bool), "_requires_eval: restored contexts break"
        llama_internals.clear_sequence(llama, 0)
        llama_internals.set_evaluated_tokens(llama, [])
        llama_internals.require_eval(llama)
        again = await chat.generate(list(messages), lambda _: None)
        assert again.prompt_tokens_evaluated == len(prompt), "a cleared context was reused"
    finally:
        chat.close()
