"""Audio both ways through real aiortc peers on loopback, and session lifecycles."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import numpy as np
import pytest

from agent.audio import OUTPUT_RATE, STT_RATE, Int16Array, resample_pcm
from agent.metrics import Metrics
from agent.transport.session import AudioSink, Session
from benchmarks.peer import AgentClient
from tests.conftest import ServerFactory


class RecordingSink:
    def __init__(self) -> None:
        self.blocks: list[Int16Array] = []
        self.stream_samples = 0
        self.closed = False

    def feed(self, block: Int16Array, stream_samples: int) -> None:
        assert block.dtype == np.int16 and block.ndim == 1
        self.blocks.append(block)
        self.stream_samples = stream_samples

    async def aclose(self) -> None:
        self.closed = True

    def audio(self) -> Int16Array:
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.int16)


class RecordingPipeline:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.sinks: dict[str, RecordingSink] = {}
        self.sessions: dict[str, Session] = {}

    def attach(self, session: Session) -> AudioSink:
        sink = RecordingSink()
        self.sinks[session.id] = sink
        self.sessions[session.id] = session
        return sink

    def describe(self) -> dict[str, Any]:
        return {"recording": {"device": "cpu"}}


def chirp(seconds: float, rate: int, seed: int = 1) -> Int16Array:
    """Band-limited noise: a signal whose cross-correlation has one sharp peak."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(int(seconds * rate)))
    freqs = np.fft.rfftfreq(int(seconds * rate), 1 / rate)
    spectrum[(freqs < 200) | (freqs > 3400)] = 0
    signal = np.fft.irfft(spectrum, n=int(seconds * rate))
    signal *= 0.3 * 32767 / np.max(np.abs(signal))
    return signal.astype(np.int16)


def locate(haystack: Int16Array, needle: Int16Array) -> tuple[int, float]:
    """Offset of `needle` in `haystack` and the normalised correlation there."""
    h = haystack.astype(np.float64)
    n = needle.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(h.size + n.size)))
    corr = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(n, size)), size)[: h.size]
    offset = int(np.argmax(corr))
    segment = h[offset : offset + n.size]
    if segment.size < n.size:
        return offset, 0.0
    score = float(np.dot(segment, n) / (np.linalg.norm(segment) * np.linalg.norm(n) + 1e-9))
    return offset, score


async def connected(server_url: str, ping_interval_s: float = 1.0) -> AgentClient:
    client = AgentClient(server_url, ping_interval_s=ping_interval_s)
    await client.connect()
    await client.wait_channel_open()
    return client


async def test_client_audio_reaches_the_session_as_16khz_blocks(
    start_server: ServerFactory,
) -> None:
    pipeline = RecordingPipeline()
    server = await start_server(pipeline=pipeline)
    client = await connected(server.url)
    try:
        sent = chirp(1.0, 48_000)
        client.mic.play(sent, 48_000)
        await client.mic.wait_sent()
        await asyncio.sleep(0.5)
        sink = pipeline.sinks[client.session_id or ""]
        got = sink.audio()
        assert sink.stream_samples == got.size > STT_RATE
        expected = resample_pcm(sent, 48_000, STT_RATE)
        _, score = locate(got, expected)
        # Opus is lossy; random band-limited noise still correlates far above chance.
        assert score > 0.8, score
    finally:
        await client.close()


async def test_agent_audio_reaches_the_client_and_clear_silences_it(
    start_server: ServerFactory,
) -> None:
    pipeline = RecordingPipeline()
    server = await start_server(pipeline=pipeline)
    client = await connected(server.url)
    try:
        session = pipeline.sessions[client.session_id or ""]
        speech = chirp(0.6, OUTPUT_RATE, seed=2)
        session.output.write(speech, OUTPUT_RATE)
        played = await session.output.wait_for_playout()
        assert played == speech.size
        await asyncio.sleep(0.4)
        _, score = locate(client.received.samples(), speech)
        assert score > 0.8, score

        long_speech = chirp(4.0, 24_000, seed=3)  # any rate: the track resamples
        session.output.write(long_speech, 24_000)
        await asyncio.sleep(0.5)
        cleared_at = time.time()
        heard = session.output.clear()
        assert 0.3 * OUTPUT_RATE < heard < 0.8 * OUTPUT_RATE
        await asyncio.sleep(0.6)
        silent_at = _silence_start(client.received, after=cleared_at)
        # The bound: aiortc's receive jitter buffer holds 4 x 20 ms, plus the frame being
        # encoded and loopback transport; measured ~100 ms.
        assert silent_at - cleared_at < 0.25, silent_at - cleared_at
    finally:
        await client.close()


def _silence_start(received: Any, after: float) -> float:
    """Wall time at which the received audio went silent for good after `after`."""
    last_loud = after
    for chunk, when in zip(received.chunks, received.arrival, strict=True):
        if when >= after and np.max(np.abs(chunk.astype(np.int32))) > 500:
            last_loud = when
    return last_loud


async def test_session_removed_when_client_closes(start_server: ServerFactory) -> None:
    server = await start_server(pipeline=RecordingPipeline())
    client = await connected(server.url)
    assert len(server.sessions) == 1
    await client.close(hang_up=False)
    async with asyncio.timeout(10):
        while len(server.sessions):
            await asyncio.sleep(0.05)


async def test_session_removed_on_delete(start_server: ServerFactory) -> None:
    pipeline = RecordingPipeline()
    server = await start_server(pipeline=pipeline)
    client = await connected(server.url)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.delete(f"{server.url}/sessions/{client.session_id}") as r:
                assert r.status == 204
            assert len(server.sessions) == 0
            assert pipeline.sinks[client.session_id or ""].closed
            async with http.delete(f"{server.url}/sessions/{client.session_id}") as r:
                assert r.status == 404
                assert "error" in await r.json()
    finally:
        await client.close()


async def test_session_closed_when_keepalive_stops(start_server: ServerFactory) -> None:
    server = await start_server(pipeline=RecordingPipeline(), keepalive_timeout_s=1.0)
    client = await connected(server.url, ping_interval_s=0.2)
    try:
        await asyncio.sleep(1.6)
        assert len(server.sessions) == 1, "pinging client must stay connected"
        client.pinging = False  # the client vanishes without closing anything
        started = time.monotonic()
        async with asyncio.timeout(5):
            while len(server.sessions):
                await asyncio.sleep(0.05)
        assert time.monotonic() - started < 2.5
    finally:
        await client.close()


async def test_ping_gets_pong(start_server: ServerFactory) -> None:
    server = await start_server(pipeline=RecordingPipeline())
    client = await connected(server.url)
    try:
        # The client pings on its own too: this pong must answer this ping, echoing its t.
        client.send({"type": "ping", "t": 1234.5})
        await client.wait_for_event(lambda e: e == {"type": "pong", "t": 1234.5}, timeout=5)
        client.send({"type": "nonsense"})
        error = await client.wait_for_event("error", timeout=5)
        assert "nonsense" in error["message"]
    finally:
        await client.close()


async def test_shutdown_closes_every_session(start_server: ServerFactory) -> None:
    pipeline = RecordingPipeline()
    server = await start_server(pipeline=pipeline)
    clients = [await connected(server.url) for _ in range(2)]
    try:
        assert len(server.sessions) == 2
        await server.app.shutdown()
        await server.app.cleanup()
        assert len(server.sessions) == 0
        assert all(s.closed for s in pipeline.sinks.values())
        await clients[0].wait_for_event("closing", timeout=5, since=0)
    finally:
        for client in clients:
            await client.close()


async def test_a_session_closed_before_its_channel_opens_still_says_why(
    start_server: ServerFactory,
) -> None:
    """The page shows the server's reason only if `closing` arrives: closing a session in
    the gap between ICE finding the peer and the events channel opening must not lose it."""
    pipeline = RecordingPipeline()
    server = await start_server(pipeline=pipeline)
    client = AgentClient(server.url)
    try:
        body = await client.connect()
        pc = pipeline.sessions[body["session_id"]].pc
        while pc.iceConnectionState not in ("connected", "completed"):
            await asyncio.sleep(0.001)
        # DTLS, then SCTP, then the channel's own handshake: still to come.
        assert pc.sctp is not None and pc.sctp.state != "connected"
        assert await server.sessions.close(body["session_id"], "restarting")
        closing = await client.wait_for_event("closing", timeout=5, since=0)
        assert closing["reason"] == "restarting"
    finally:
        await client.close()


pytestmark = pytest.mark.timeout(60)
