"""Limits: the per-client offer rate and session cap (429 with Retry-After), the idle timeout
that only silence trips, and the maximum session length."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest import mock

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import make_mocked_request

from agent.app.runtime import session_vad
from agent.config import ConversationConfig, ServerConfig
from agent.dialogue.conversation import Conversation
from agent.dialogue.listening import Listening
from agent.dialogue.turn import TurnDeps
from agent.metrics import Metrics
from agent.transport.lifetime import Lifetime
from agent.transport.session import AudioSink, Session
from benchmarks.corpus import espeak
from benchmarks.peer import AgentClient
from signaling.access import AccessPolicy, client_key
from signaling.limits import RateLimiter
from tests.conftest import RunningServer, ServerFactory
from tests.fakes import ScriptedChat, ScriptedTranscriber, ToneSynthesizer
from tests.test_transport import RecordingPipeline

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the rate limiter -----------------------------------------------------------------


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)  # one per 10 s
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(10.0)
    assert limiter.acquire("b") == 0.0, "another client has its own bucket"
    clock.now += 4
    assert limiter.acquire("a") == pytest.approx(6.0), "a refused offer takes no token"
    clock.now += 6
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(10.0)
    clock.now += 3600
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0, "the burst never grows past 3"


def test_rate_limiter_forgets_refilled_buckets_and_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock, max_clients=100)
    for i in range(1000):
        limiter.acquire(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) <= 100
    clock.now += 2.0  # every bucket refilled: they carry nothing worth keeping
    limiter.acquire("new")
    assert len(limiter) == 1
    assert RateLimiter(0, 1).acquire("x") == 0.0, "0 turns the limit off"


# -- client addresses -----------------------------------------------------------------


def test_client_key_groups_ipv6_by_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") == "192.0.2.7"


def request_from(peer: str, **headers: str) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        (peer, 40000) if key == "peername" else default
    )
    return make_mocked_request("POST", "/offer", headers=headers, transport=transport)


def test_forwarded_for_is_read_from_the_right_behind_trusted_proxies() -> None:
    trusted = AccessPolicy.from_config(ServerConfig(trusted_proxies=("10.0.0.0/8",)))
    untrusted = AccessPolicy.from_config(ServerConfig())
    # The client forged the first entry; the proxies appended the real ones.
    xff = "6.6.6.6, 203.0.113.9, 10.0.0.2"
    assert trusted.client_address(request_from("10.0.0.1", **{"X-Forwarded-For": xff})) == (
        "203.0.113.9"
    )
    assert untrusted.client_address(request_from("10.0.0.1", **{"X-Forwarded-For": xff})) == (
        "10.0.0.1"
    )
    # Not from a proxy: the header is the sender's own claim and is ignored.
    assert trusted.client_address(request_from("198.51.100.4", **{"X-Forwarded-For": xff})) == (
        "198.51.100.4"
    )
    assert trusted.client_address(request_from("10.0.0.1")) == "10.0.0.1"
    junk = {"X-Forwarded-For": "junk, 10.0.0.3"}
    assert trusted.client_address(request_from("10.0.0.1", **junk)) == "10.0.0.3"


# -- over HTTP, with real peers -------------------------------------------------------


async def post_junk(server: RunningServer, forwarded_for: str | None = None) -> Any:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/offer", data=b"{}", headers=headers) as response:
            return response.status, response.headers.get("Retry-After"), await response.json()


async def test_offer_rate_limit_answers_429_per_client(start_server: ServerFactory) -> None:
    server = await start_server(
        pipeline=RecordingPipeline(),
        offer_rate_per_min=6,
        offer_burst=2,
        trusted_proxies=("127.0.0.1",),
    )
    # Junk counts too: the limit applies before the body is even read.
    assert (await post_junk(server, "203.0.113.1"))[0] == 400
    assert (await post_junk(server, "203.0.113.1"))[0] == 400
    status, retry_after, body = await post_junk(server, "203.0.113.1")
    assert status == 429
    assert 1 <= int(retry_after) <= 10
    assert "too many offers" in body["error"]
    # Another client behind the same proxy is not affected...
    assert (await post_junk(server, "203.0.113.2"))[0] == 400
    # ...and a real offer from it connects.
    client = AgentClient(server.url)
    try:
        async with aiohttp.ClientSession(headers={"X-Forwarded-For": "203.0.113.2"}) as http:
            await client.connect(http)
        await client.wait_channel_open()
    finally:
        await client.close()


async def test_forged_forwarded_for_does_not_escape_the_limit(
    start_server: ServerFactory,
) -> None:
    server = await start_server(pipeline=RecordingPipeline(), offer_rate_per_min=6, offer_burst=1)
    assert (await post_junk(server, "203.0.113.1"))[0] == 400
    assert (await post_junk(server, "203.0.113.2"))[0] == 429


async def connect_as(server: RunningServer, address: str) -> AgentClient:
    client = AgentClient(server.url)
    try:
        async with aiohttp.ClientSession(headers={"X-Forwarded-For": address}) as http:
            await client.connect(http)
    except BaseException:
        await client.close(hang_up=False)
        raise
    return client


async def test_per_client_session_cap_answers_429(start_server: ServerFactory) -> None:
    server = await start_server(
        pipeline=RecordingPipeline(), max_sessions_per_ip=2, trusted_proxies=("127.0.0.1",)
    )
    clients = [await connect_as(server, "203.0.113.5") for _ in range(2)]
    try:
        with pytest.raises(ConnectionRefusedError, match="429"):
            await connect_as(server, "203.0.113.5")
        async with aiohttp.ClientSession() as http:
            offer = {"sdp": clients[0].pc.localDescription.sdp, "type": "offer"}
            headers = {"X-Forwarded-For": "203.0.113.5"}
            async with http.post(f"{server.url}/offer", json=offer, headers=headers) as r:
                assert r.status == 429
                assert int(r.headers["Retry-After"]) > 0
                assert "2 sessions" in (await r.json())["error"]
        # Another address still gets in; the cap counts live sessions, not past ones.
        clients.append(await connect_as(server, "2001:db8::1"))
        await clients[0].close()
        async with asyncio.timeout(5):
            while server.sessions.sessions_of("203.0.113.5") != 1:
                await asyncio.sleep(0.02)
        clients.append(await connect_as(server, "203.0.113.5"))
        assert len(server.sessions) == 3
    finally:
        for client in clients:
            await client.close()
    async with asyncio.timeout(5):
        while len(server.sessions):
            await asyncio.sleep(0.02)
    assert server.sessions.sessions_of("203.0.113.5") == 0


# -- idle timeout and maximum length: the bookkeeping on a scripted clock -------------


def test_half_an_hour_of_conversation_is_never_idle() -> None:
    life = Lifetime(idle_timeout_s=300, max_session_s=7200)
    now = 0.0
    life.start(now)
    while now < 1800:  # a turn a minute: 20 s of speech, then the agent answers
        life.speech_started(now)
        for _ in range(20):
            now += 1
            assert life.expired(now) is None
        life.speech_ended(now)
        last_speech = now
        for _ in range(40):
            now += 1
            assert life.expired(now) is None, now
    assert life.expired(last_speech + 299) is None
    assert life.expired(last_speech + 300) == "no speech for 300 s"


def test_a_user_who_is_speaking_is_not_idle() -> None:
    life = Lifetime(idle_timeout_s=10)
    life.start(0)
    life.speech_started(5)
    assert life.expired(100) is None
    life.speech_ended(100)
    assert life.expired(109) is None
    assert life.expired(110) is not None


def test_maximum_length_holds_even_with_speech_and_zero_disables() -> None:
    life = Lifetime(idle_timeout_s=300, max_session_s=7200)
    life.start(0)
    life.speech_started(7199)
    assert life.expired(7200) == "the session reached its maximum length of 7200 s"
    off = Lifetime()
    off.start(0)
    assert off.expired(1e9) is None
    assert off.check_period_s == float("inf")


# -- idle timeout and maximum length: real sessions -----------------------------------


async def wait_gone(server: RunningServer, timeout: float) -> float:
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while len(server.sessions):
            await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_idle_session_is_closed_unless_the_user_speaks(start_server: ServerFactory) -> None:
    pipeline = RecordingPipeline()
    server = await start_server(pipeline=pipeline, idle_timeout_s=0.5)
    client = AgentClient(server.url, ping_interval_s=0.1)
    try:
        await client.connect()
        await client.wait_channel_open()
        session = pipeline.sessions[client.session_id or ""]
        # The conversation reports speech through the session's events, as Runtime wires it.
        for turn in range(8):
            session.send_event({"type": "user_speech_start", "turn": turn})
            await asyncio.sleep(0.2)
            session.send_event({"type": "user_speech_end", "turn": turn})
            await asyncio.sleep(0.2)
        assert len(server.sessions) == 1, "closed although the user kept talking"
        assert await wait_gone(server, 5) < 1.5
        closing = await client.wait_for_event("closing", timeout=5, since=0)
        assert closing["reason"] == "no speech for 0.5 s"
        assert closing["reconnect"] is False
    finally:
        await client.close()


async def test_session_is_closed_at_its_maximum_length(start_server: ServerFactory) -> None:
    pipeline = RecordingPipeline()
    server = await start_server(pipeline=pipeline, max_session_s=1.0)
    client = AgentClient(server.url, ping_interval_s=0.1)
    try:
        await client.connect()
        await client.wait_channel_open()
        pipeline.sessions[client.session_id or ""].send_event({"type": "user_speech_start"})
        assert await wait_gone(server, 5) < 2.0
        closing = await client.wait_for_event("closing", timeout=5, since=0)
        assert "maximum length" in closing["reason"]
        assert closing["reconnect"] is False
    finally:
        await client.close()


class VadPipeline:
    """The production wiring of Runtime.attach with the real Silero VAD and Conversation,
    and scripted speech recognition, language model and voice."""

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self.metrics = Metrics()
        self.executor = executor
        self.config = ConversationConfig()

    def attach(self, session: Session) -> AudioSink:
        deps = TurnDeps(
            transcriber=ScriptedTranscriber(["Hello"] * 10),
            chat=ScriptedChat(reply="Yes."),
            tts=ToneSynthesizer(),
            tts_executor=self.executor,
            track=session.output,
            emit=session.send_event,
        )
        return Conversation(
            config=self.config,
            listening=Listening(session_vad(self.config, semantic=False), self.executor),
            deps=deps,
            metrics=self.metrics,
        )

    def describe(self) -> dict[str, Any]:
        return {}


@pytest.mark.slow
async def test_real_speech_keeps_the_session_open(
    start_server: ServerFactory, tmp_path: Any
) -> None:
    """Speech heard by the real VAD, including one utterance longer than the idle timeout,
    keeps the session open; the silence after it closes it."""
    speech, rate = espeak("The quick brown fox jumps over the lazy dog again and again")
    idle_s = 1.2
    assert speech.size / rate > idle_s + 0.5
    with ThreadPoolExecutor(2) as executor:
        server = await start_server(pipeline=VadPipeline(executor), idle_timeout_s=idle_s)
        client = AgentClient(server.url, ping_interval_s=0.2)
        try:
            await client.connect()
            await client.wait_channel_open()
            pause = np.zeros(int(0.8 * rate), dtype=np.int16)
            for _ in range(2):
                client.mic.play(speech, rate)
                client.mic.play(pause, rate)
            talking_s = 2 * (speech.size / rate + 0.8)
            started = time.monotonic()
            while time.monotonic() - started < talking_s:
                assert len(server.sessions) == 1, "closed while the user was talking"
                await asyncio.sleep(0.05)
            speaking = [e.data["type"] for e in client.events if "user_speech" in e.data["type"]]
            assert speaking.count("user_speech_start") >= 2, speaking
            assert await wait_gone(server, 6) < idle_s + 1.5
            closing = await client.wait_for_event("closing", timeout=5, since=0)
            assert closing["reconnect"] is False
        finally:
            await client.close()


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_page_does_not_reconnect_after_the_idle_timeout(
    start_server: ServerFactory, tmp_path: Any
) -> None:
    from tests.test_web import browser_page, fake_mic_wav, wait_until

    server = await start_server(pipeline=RecordingPipeline(), idle_timeout_s=1.0)
    wav = fake_mic_wav(tmp_path, "Testing, one two three.")
    async with browser_page(server.url, mic_wav=wav) as probe:
        offers: list[int] = []
        probe.page.on(
            "response", lambda r: offers.append(r.status) if r.url.endswith("/offer") else None
        )
        await probe.page.click("#talk")
        await probe.wait_for("document.body.dataset.connection === 'connected'", 20, "connected")
        # The recording pipeline reports no speech: the server ends the call.
        await probe.wait_for("document.body.dataset.connection === 'idle'", 10, "the end")
        assert "no speech for 1 s" in await probe.page.inner_text("#log")
        assert await probe.page.get_attribute("#talk", "aria-pressed") == "false"
        assert await probe.page.is_hidden("#error")
        await asyncio.sleep(2.0)
        assert offers == [200], "the page reconnected after an idle close"
        await wait_until(lambda: len(server.sessions) == 0, 5, "the session to close")
        assert probe.errors == []
