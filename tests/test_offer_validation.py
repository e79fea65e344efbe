"""POST /offer with bad input: clear JSON errors, the right status, nothing left behind."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from benchmarks.peer import AgentClient, offer_sdp
from tests.conftest import ServerFactory
from tests.test_transport import RecordingPipeline


async def browser_like_offer() -> str:
    return await offer_sdp()


def without_lines(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


def with_video(sdp: str) -> str:
    return sdp + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n"


def duplicated_audio(sdp: str) -> str:
    start = sdp.index("m=audio")
    end = sdp.index("m=application") if "m=application" in sdp else len(sdp)
    return sdp + sdp[start:end]


BAD_BODIES = [
    ("not json", lambda sdp: b"this is not json", "not JSON"),
    ("array", lambda sdp: b"[1, 2]", "JSON object"),
    ("missing sdp", lambda sdp: json.dumps({"type": "offer"}).encode(), "'sdp'"),
    ("missing type", lambda sdp: json.dumps({"sdp": sdp}).encode(), "'type'"),
    ("sdp not a string", lambda sdp: json.dumps({"sdp": 5, "type": "offer"}).encode(), "string"),
    ("answer type", lambda sdp: json.dumps({"sdp": sdp, "type": "answer"}).encode(), "offer"),
    ("empty sdp", lambda sdp: json.dumps({"sdp": "", "type": "offer"}).encode(), "v=0"),
    (
        "garbage sdp",
        lambda sdp: json.dumps({"sdp": "v=0\r\nxx", "type": "offer"}).encode(),
        "audio",
    ),
    (
        "no audio",
        lambda sdp: json.dumps({"sdp": sdp[: sdp.index("m=audio")], "type": "offer"}).encode(),
        "exactly one audio",
    ),
    (
        "two audio",
        lambda sdp: json.dumps({"sdp": duplicated_audio(sdp), "type": "offer"}).encode(),
        "exactly one audio",
    ),
    (
        "video too",
        lambda sdp: json.dumps({"sdp": with_video(sdp), "type": "offer"}).encode(),
        "unsupported media",
    ),
    (
        "no ice credentials",
        lambda sdp: json.dumps({"sdp": without_lines(sdp, "a=ice-"), "type": "offer"}).encode(),
        "ICE",
    ),
    (
        "no fingerprint",
        lambda sdp: json.dumps(
            {"sdp": without_lines(sdp, "a=fingerprint"), "type": "offer"}
        ).encode(),
        "fingerprint",
    ),
]


@pytest.mark.parametrize(
    ("name", "make_body", "message"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_offer_is_rejected_with_a_clear_error(
    start_server: ServerFactory, name: str, make_body: object, message: str
) -> None:
    server = await start_server(pipeline=RecordingPipeline())
    body = make_body(await browser_like_offer())  # type: ignore[operator]
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.url}/offer", data=body, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 400, name
            error = (await response.json())["error"]
    assert message in error, error
    assert len(server.sessions) == 0


async def test_oversized_offer_gets_413(start_server: ServerFactory) -> None:
    server = await start_server(pipeline=RecordingPipeline())
    body = json.dumps({"sdp": "v=0\r\n" + "a=x\r\n" * 20_000, "type": "offer"})
    assert len(body) > 64 * 1024
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/offer", data=body) as response:
            assert response.status == 413
            assert (
                "64" in (await response.json())["error"]
                or "bytes" in (await response.json())["error"]
            )

        async def chunked():  # no Content-Length: the cap must hold while reading
            for _ in range(20):
                yield b"x" * 8192

        async with http.post(f"{server.url}/offer", data=chunked()) as response:
            assert response.status == 413
    assert len(server.sessions) == 0


async def test_session_cap_answers_503_with_retry_after(start_server: ServerFactory) -> None:
    server = await start_server(pipeline=RecordingPipeline(), max_sessions=2)
    clients = [AgentClient(server.url) for _ in range(3)]
    try:
        await clients[0].connect()
        await clients[1].connect()
        with pytest.raises(ConnectionRefusedError, match="503"):
            await clients[2].connect()
        async with aiohttp.ClientSession() as http:
            offer = {"sdp": await browser_like_offer(), "type": "offer"}
            async with http.post(f"{server.url}/offer", json=offer) as response:
                assert response.status == 503
                assert int(response.headers["Retry-After"]) > 0
                assert "full" in (await response.json())["error"]
            async with http.get(f"{server.url}/health") as response:
                # A load balancer's health check reads 503: no new visitors for this one.
                assert response.status == 503
                health = await response.json()
            assert health["sessions"] == 2
            assert health["status"] == "full"
            assert "recording" in health["models"]
            await clients[0].close()
            async with asyncio.timeout(5):
                while len(server.sessions) > 1:
                    await asyncio.sleep(0.02)
            async with http.get(f"{server.url}/health") as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ok"
    finally:
        for client in clients:
            await client.close()


async def test_a_valid_offer_still_works_after_junk(start_server: ServerFactory) -> None:
    server = await start_server(pipeline=RecordingPipeline())
    async with aiohttp.ClientSession() as http:
        for body in (b"", b"{", b'{"sdp": "v=0", "type": "offer"}'):
            async with http.post(f"{server.url}/offer", data=body) as response:
                assert response.status == 400
    client = AgentClient(server.url)
    try:
        answer = await client.connect()
        assert answer["type"] == "answer" and answer["session_id"]
        assert len(server.sessions) == 1
    finally:
        await client.close()
