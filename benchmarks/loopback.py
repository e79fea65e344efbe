"""Transport floor over loopback, no models: one-way audio latency client -> session and
session -> client (tone bursts, energy onsets), and the time to answer an offer.

    python -m benchmarks.loopback --bursts 30 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from agent.audio import OUTPUT_RATE, Int16Array
from agent.config import AppConfig
from agent.config.env import apply_environment
from agent.metrics import Metrics
from agent.transport.session import AudioSink, Session
from benchmarks.machine import describe, one_line
from benchmarks.peer import AgentClient
from signaling.app import create_app

LOUD = 2000


def tone(seconds: float, rate: int) -> Int16Array:
    t = np.arange(int(seconds * rate)) / rate
    return (12000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


class OnsetSink:
    """Notes the wall time of every block whose peak crosses LOUD after a quiet one."""

    def __init__(self) -> None:
        self.onsets: list[float] = []
        self._loud = False

    def feed(self, block: Int16Array, stream_samples: int) -> None:
        loud = bool(np.max(np.abs(block.astype(np.int32))) > LOUD)
        if loud and not self._loud:
            self.onsets.append(time.time())
        self._loud = loud

    async def aclose(self) -> None:
        return None


class OnsetPipeline:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.sinks: dict[str, OnsetSink] = {}
        self.sessions: dict[str, Session] = {}

    def attach(self, session: Session) -> AudioSink:
        self.sessions[session.id] = session
        self.sinks[session.id] = OnsetSink()
        return self.sinks[session.id]

    def describe(self) -> dict[str, Any]:
        return {}


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
        "min_ms": round(ms[0], 1),
        "max_ms": round(ms[-1], 1),
    }


async def measure(bursts: int) -> dict[str, Any]:
    pipeline = OnsetPipeline()
    runner = web.AppRunner(create_app(AppConfig(), pipeline), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    answer_times: list[float] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(bursts):
                probe = AgentClient(url)
                started = time.perf_counter()
                await probe.connect(http)
                answer_times.append(time.perf_counter() - started)
                await probe.close()
                await asyncio.sleep(0.05)
        client = AgentClient(url)
        await client.connect()
        await client.wait_channel_open()
        await asyncio.sleep(1.0)  # let both jitter buffers settle
        sink = pipeline.sinks[client.session_id or ""]
        session = pipeline.sessions[client.session_id or ""]

        uplink: list[float] = []
        sent: list[float] = []
        for _ in range(bursts):
            client.mic.play(tone(0.1, 48_000), 48_000, on_sent=lambda s, e: sent.append(s))
            before = len(sink.onsets)
            await client.mic.wait_sent()
            await asyncio.sleep(0.4)
            if len(sink.onsets) > before:
                uplink.append(sink.onsets[before] - sent[-1])

        downlink: list[float] = []
        for _ in range(bursts):
            chunks_before = len(client.received.chunks)
            written = time.time()
            session.output.write(tone(0.1, OUTPUT_RATE), OUTPUT_RATE)
            await asyncio.sleep(0.4)
            arrivals = client.received.arrival[chunks_before:]
            chunks = client.received.chunks[chunks_before:]
            for chunk, when in zip(chunks, arrivals, strict=True):
                if np.max(np.abs(chunk.astype(np.int32))) > LOUD:
                    downlink.append(when - written)
                    break
        await client.close()
    finally:
        await runner.cleanup()
    return {
        "offer_answer": summary(answer_times),
        "client_to_session": summary(uplink),
        "session_to_client": summary(downlink),
    }


def markdown(result: dict[str, Any], machine: dict[str, Any]) -> str:
    rows = [
        ("POST /offer to answer (ICE gathering complete)", result["offer_answer"]),
        ("one-way audio, client mic to session sink", result["client_to_session"]),
        ("one-way audio, AgentAudioTrack.write to client ear", result["session_to_client"]),
    ]
    lines = [
        "# Loopback transport floor (no models)",
        "",
        f"Machine: {one_line(machine)}. Command: `python -m benchmarks.loopback --bursts 30`.",
        "",
        "| measure | n | median | p90 | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        lines.append(
            f"| {name} | {s['n']} | {s['median_ms']} ms | {s['p90_ms']} ms "
            f"| {s['min_ms']} ms | {s['max_ms']} ms |"
        )
    lines += [
        "",
        "Client to session includes the client's 20 ms frame pacing, Opus, loopback, and "
        "aiortc's receive jitter buffer (4 x 20 ms prefetch). Session to client includes "
        "waiting for the track's next 20 ms frame slot, Opus, loopback and the client's "
        "jitter buffer.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bursts", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    apply_environment(parser)
    args = parser.parse_args()
    result = asyncio.run(measure(args.bursts))
    machine = describe()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loopback.json").write_text(
        json.dumps({"machine": machine, **result}, indent=2) + "\n"
    )
    text = markdown(result, machine)
    (args.out / "loopback.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
