"""Access control: the bind rule, the bearer token, the Origin check, and the headers every
page response carries."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

import signaling.offer
from agent.cli import build_parser, main
from agent.config import AppConfig, ServerConfig, config_from_args
from benchmarks.peer import AgentClient
from tests.conftest import RunningServer, ServerFactory
from tests.test_offer_validation import browser_like_offer
from tests.test_transport import RecordingPipeline

pytestmark = pytest.mark.timeout(60)

TOKEN = "0123456789abcdef0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def serve_config(*argv: str) -> ServerConfig:
    return config_from_args(build_parser().parse_args(["serve", *argv])).server


# -- the bind rule --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--host", "127.0.0.1"],
        ["--host", "::1"],
        ["--host", "localhost"],
        ["--host", "0.0.0.0", "--token", TOKEN],
        ["--host", "0.0.0.0", "--no-auth"],
        ["--host", "192.168.1.5", "--no-auth"],
        ["--trusted-proxies", "127.0.0.1", "--token", TOKEN],
    ],
)
def test_allowed_binds(argv: list[str]) -> None:
    serve_config(*argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--host", "0.0.0.0"], "--token"),
        (["--host", "::"], "--no-auth"),
        (["--host", "192.168.1.5"], "--token"),
        (["--host", "agent.example.org"], "--token"),
        (["--trusted-proxies", "127.0.0.1"], "reverse proxy"),
        (["--token", TOKEN, "--no-auth"], "contradict"),
        (["--token", "has space in the middle"], "--token"),
        (["--host", "0.0.0.0", "--token", "short"], "16 characters"),
        (["--allowed-origins", "https://x.example.org/path"], "--allowed-origins"),
        (["--trusted-proxies", "not-an-ip"], "--trusted-proxies"),
        (["--offer-rate", "-1"], "--offer-rate"),
        (["--idle-timeout", "-5"], "--idle-timeout"),
    ],
)
def test_refused_configurations(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        serve_config(*argv)


def test_cli_refuses_a_public_bind_without_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--token" in err and "--no-auth" in err


def test_token_and_origins_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_TOKEN", TOKEN)
    config = serve_config(
        "--host", "0.0.0.0", "--allowed-origins", "HTTPS://Agent.Example.org:443/"
    )
    assert config.token == TOKEN
    assert config.allowed_origins == ("https://agent.example.org",)
    assert serve_config().max_sessions_per_ip == 3


# -- the token ------------------------------------------------------------------------


class CountingPeerConnection(RTCPeerConnection):  # type: ignore[misc]
    created = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        CountingPeerConnection.created += 1
        super().__init__(*args, **kwargs)


@pytest.fixture
def server_peers(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[CountingPeerConnection]]:
    """Counts the peer connections the server builds for offers."""
    CountingPeerConnection.created = 0
    monkeypatch.setattr(signaling.offer, "RTCPeerConnection", CountingPeerConnection)
    yield CountingPeerConnection


async def token_server(start_server: ServerFactory, **server: Any) -> RunningServer:
    config = replace(AppConfig(), server=replace(ServerConfig(), token=TOKEN, **server))
    return await start_server(config, RecordingPipeline())


async def post_offer(server: RunningServer, headers: dict[str, str]) -> tuple[int, Any, Any]:
    offer = {"sdp": await browser_like_offer(), "type": "offer"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/offer", json=offer, headers=headers) as response:
            return response.status, await response.json(), response.headers


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "prefix", "basic", "no-scheme"],
)
async def test_offer_without_the_right_token_gets_401_and_no_peer(
    start_server: ServerFactory,
    server_peers: type[CountingPeerConnection],
    headers: dict[str, str],
) -> None:
    server = await token_server(start_server)
    status, body, response_headers = await post_offer(server, headers)
    assert status == 401
    assert "token" in body["error"]
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    assert server_peers.created == 0
    assert len(server.sessions) == 0


async def test_offer_with_the_token_connects_and_delete_needs_it_too(
    start_server: ServerFactory, server_peers: type[CountingPeerConnection]
) -> None:
    server = await token_server(start_server)
    client = AgentClient(server.url, token=TOKEN)
    try:
        await client.connect()
        await client.wait_channel_open()
        assert server_peers.created == 1
        url = f"{server.url}/sessions/{client.session_id}"
        async with aiohttp.ClientSession() as http:
            async with http.delete(url) as response:
                assert response.status == 401
            assert len(server.sessions) == 1, "an unauthenticated DELETE closed a session"
            async with http.delete(url, headers={"Authorization": f"bearer {TOKEN}"}) as response:
                assert response.status == 204
        assert len(server.sessions) == 0
    finally:
        await client.close(hang_up=False)


@pytest.mark.parametrize("token", [TOKEN, None], ids=["with-token", "without"])
async def test_the_client_hangs_up_with_its_token(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture, token: str | None
) -> None:
    """AgentClient (the bench's client) sends its token with the DELETE too; without it the
    server refuses the DELETE and the client says so."""
    server = await token_server(start_server)
    client = AgentClient(server.url, token=token)
    async with aiohttp.ClientSession(headers=BEARER) as authed:  # the offer is let in
        await client.connect(authed)
    await client.wait_channel_open()
    with caplog.at_level(logging.WARNING, logger="benchmarks.peer"):
        await client.close()
    refusals = [r.getMessage() for r in caplog.records if r.name == "benchmarks.peer"]
    if token is None:
        assert len(refusals) == 1 and "401" in refusals[0], refusals
    else:
        assert refusals == []
        assert len(server.sessions) == 0, "the DELETE did not end the session"


async def test_metrics_and_config_need_the_token_page_and_health_do_not(
    start_server: ServerFactory,
) -> None:
    server = await token_server(start_server)
    async with aiohttp.ClientSession() as http:
        for path in ("/metrics", "/config"):
            async with http.get(server.url + path) as response:
                assert response.status == 401, path
                assert "error" in await response.json()
            async with http.get(server.url + path, headers=BEARER) as response:
                assert response.status == 200, path
        for path in ("/", "/?token=whatever", "/static/app.js", "/health"):
            async with http.get(server.url + path) as response:
                assert response.status == 200, path


# -- the Origin check -----------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1"],
)
async def test_offer_from_a_foreign_origin_gets_403_and_no_peer(
    start_server: ServerFactory, server_peers: type[CountingPeerConnection], origin: str
) -> None:
    server = await start_server(pipeline=RecordingPipeline())
    status, body, _ = await post_offer(server, {"Origin": origin})
    assert status == 403
    assert "origin" in body["error"]
    assert server_peers.created == 0


async def connect_with_headers(server: RunningServer, headers: dict[str, str]) -> AgentClient:
    client = AgentClient(server.url)
    async with aiohttp.ClientSession(headers=headers) as http:
        await client.connect(http)
    return client


async def test_offer_from_the_page_origin_connects(start_server: ServerFactory) -> None:
    server = await start_server(pipeline=RecordingPipeline())
    client = await connect_with_headers(server, {"Origin": server.url})
    try:
        await client.wait_channel_open()
        assert len(server.sessions) == 1
    finally:
        await client.close()


async def test_allowed_origins_connect(start_server: ServerFactory) -> None:
    server = await start_server(
        pipeline=RecordingPipeline(), allowed_origins=("https://agent.example.org",)
    )
    client = await connect_with_headers(server, {"Origin": "https://agent.example.org"})
    try:
        await client.wait_channel_open()
    finally:
        await client.close()
    status, _, _ = await post_offer(server, {"Origin": "https://other.example.org"})
    assert status == 403


async def test_forwarded_origin_is_believed_only_from_trusted_proxies(
    start_server: ServerFactory,
) -> None:
    """Behind a TLS-terminating proxy the browser's Origin is https://public-name while
    this server sees http://127.0.0.1: X-Forwarded-Proto/Host bridge the two, from a
    trusted proxy only."""
    proxied = {
        "Origin": "https://agent.example.org",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "agent.example.org",
    }
    untrusting = await start_server(pipeline=RecordingPipeline())
    assert (await post_offer(untrusting, proxied))[0] == 403

    trusting = await start_server(pipeline=RecordingPipeline(), trusted_proxies=("127.0.0.1",))
    client = await connect_with_headers(trusting, proxied)
    try:
        await client.wait_channel_open()
    finally:
        await client.close()


# -- DNS rebinding --------------------------------------------------------------------


async def test_a_rebound_name_is_refused_by_a_tokenless_loopback_server(
    start_server: ServerFactory, server_peers: type[CountingPeerConnection]
) -> None:
    """evil.example re-pointed at 127.0.0.1: its page is same-origin with itself, so Origin
    and Host agree; the Host alone betrays it."""
    server = await start_server(pipeline=RecordingPipeline())
    port = server.url.rsplit(":", 1)[1]
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    status, body, _ = await post_offer(server, rebound)
    assert status == 403
    assert "host" in body["error"] and "localhost" in body["error"]
    assert server_peers.created == 0
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/config", headers=rebound) as response:
            assert response.status == 403


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST.", "app.localhost", "127.0.0.1", "127.3.4.5", "[::1]"]
)
async def test_loopback_names_are_served(start_server: ServerFactory, host: str) -> None:
    server = await start_server(pipeline=RecordingPipeline())
    port = server.url.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as http:
        headers = {"Host": f"{host}:{port}"}
        async with http.get(f"{server.url}/config", headers=headers) as response:
            assert response.status == 200


async def test_with_a_token_or_a_trusted_proxy_any_host_is_served(
    start_server: ServerFactory,
) -> None:
    tokened = await token_server(start_server)
    async with aiohttp.ClientSession() as http:
        headers = {**BEARER, "Host": "agent.example.org"}
        async with http.get(f"{tokened.url}/config", headers=headers) as response:
            assert response.status == 200
    proxied = await start_server(pipeline=RecordingPipeline(), trusted_proxies=("127.0.0.1",))
    async with aiohttp.ClientSession() as http:
        headers = {"Host": "agent.example.org"}
        async with http.get(f"{proxied.url}/config", headers=headers) as response:
            assert response.status == 200


# -- headers on every response --------------------------------------------------------


async def test_page_responses_carry_csp_and_permissions_policy(
    start_server: ServerFactory,
) -> None:
    server = await start_server(pipeline=RecordingPipeline())
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/static/app.js", "/static/style.css", "/health"):
            async with http.get(server.url + path) as response:
                assert response.status == 200
                csp = response.headers["Content-Security-Policy"]
                assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
                assert response.headers["Permissions-Policy"] == "microphone=(self)"
                assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- the page -------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_page_sends_the_token_from_its_url(
    start_server: ServerFactory, tmp_path: Any
) -> None:
    from tests.test_web import browser_page, fake_mic_wav, wait_until

    pipeline = RecordingPipeline()
    config = replace(AppConfig(), server=replace(ServerConfig(), token=TOKEN))
    server = await start_server(config, pipeline)
    wav = fake_mic_wav(tmp_path, "Testing, one two three.")

    async with browser_page(server.url + "/", mic_wav=wav) as probe:
        await probe.page.click("#talk")
        await probe.wait_for("!document.getElementById('error').hidden", 10, "the error")
        assert "access token" in await probe.page.inner_text("#error")
        assert await probe.page.inner_text("#connection-text") == "Refused"
        assert await probe.value("window.__pcs.length") == 0, "no peer without the token"
        assert len(server.sessions) == 0
        assert [e for e in probe.errors if "401" not in e] == []

    async with browser_page(f"{server.url}/?token={TOKEN}", mic_wav=wav) as probe:
        deletes: list[int] = []
        probe.page.on(
            "response", lambda r: deletes.append(r.status) if r.request.method == "DELETE" else None
        )
        await probe.page.click("#talk")
        await probe.wait_for("document.body.dataset.connection === 'connected'", 20, "connected")
        assert len(server.sessions) == 1
        await probe.page.click("#talk")  # hang up: the DELETE carries the token too
        await wait_until(lambda: deletes == [204], 10, "the DELETE")
        await wait_until(lambda: len(server.sessions) == 0, 10, "the session to close")
        assert probe.errors == []
