"""Soak: hundreds of connect, talk, close cycles against the real app and models, watching
the process for leaks.

    python -m benchmarks.soak --cycles 300 --models DIR --profile tiny

Each cycle is what a visitor does: a real aiortc client connects through POST /offer, says
one espeak-ng sentence, waits for the agent's reply (its first audible frame, or every
second round the whole turn up to `turn_metrics`), then hangs up; `--concurrency` cycles
run side by side. Hanging up while the
agent is still talking exercises the cancellation of a running turn. The server and the
client share this process, so a leak on either side shows: after the warm-up cycles (model
threads, executors and allocator pools reach their working size) RSS must stay flat, and
threads, file descriptors and asyncio tasks must come back to their baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import logging
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection

from agent.audio import rms
from agent.config import AppConfig, ConversationConfig, ModelConfig
from agent.config.env import apply_environment
from agent.models.registry import PROFILE_NAMES
from benchmarks import machine
from benchmarks.corpus import Utterance, synthesize_utterance
from benchmarks.harness import (
    ProcessSnapshot,
    one_address_config,
    served,
    snapshot,
    summarize,
    write_results,
)
from benchmarks.peer import AgentClient
from signaling.sessions import SessionRegistry

log = logging.getLogger(__name__)

SENTENCE = "Hi there."
"""Short: a cycle is about 1.6 s to the reply's first sound with the tiny models."""
LOUD_RMS = 300.0
"""A received 20 ms frame above this RMS is the agent speaking (idle playout is zeros)."""


@dataclass(frozen=True)
class SoakSettings:
    cycles: int = 300
    warmup: int = 20
    """Cycles before the baseline is taken; they are reported but not judged."""
    reply_timeout_s: float = 30.0
    full_turn_every: int = 2
    """Every n-th round of cycles waits for the whole reply (turn_metrics) instead of its
    first sound."""
    concurrency: int = 1
    """Cycles run side by side: sessions overlap, and a short run takes less time."""
    settle_s: float = 5.0
    """How long the end snapshot may wait for threads, fds and tasks to come back."""


@dataclass
class CycleResult:
    index: int
    outcome: str
    """"reply_heard", "turn_done", "timeout" or "error: ..."."""
    seconds: float
    transcript: bool
    rss_mb: float
    threads: int
    fds: int
    tasks: int | None
    sessions_left: int


@dataclass
class SoakResult:
    settings: SoakSettings
    start: ProcessSnapshot
    baseline: ProcessSnapshot
    end: ProcessSnapshot
    cycles: list[CycleResult] = field(default_factory=list)
    peer_connections_alive: int = 0
    """RTCPeerConnection objects still in memory after the run, beyond those before it."""

    @property
    def measured(self) -> list[CycleResult]:
        return self.cycles[self.settings.warmup :]

    @property
    def rss_growth_mb(self) -> float:
        return round(self.end.rss_mb - self.baseline.rss_mb, 2)

    def rss_slope_mb_per_100(self) -> float:
        """Least-squares slope of RSS over the measured cycles: a leak is a steady climb,
        allocator noise is not."""
        points = self.measured
        if len(points) < 2:
            return 0.0
        slope = np.polyfit([c.index for c in points], [c.rss_mb for c in points], 1)[0]
        return round(float(slope) * 100, 3)

    def thread_growth(self) -> dict[str, Any]:
        """Threads at the end beyond the baseline, explained. Thread pools start their
        workers lazily, up to their size, so a pool that existed at the baseline may still
        add one; any other new thread, or native (non-Python) thread, is unexplained."""
        base, end = self.baseline, self.end
        pools = {name.rpartition("_")[0] for name in base.python_threads if _is_worker(name)}
        new = list((Counter(end.python_threads) - Counter(base.python_threads)).elements())
        native = (end.threads - len(end.python_threads)) - (base.threads - len(base.python_threads))
        return {
            "threads": end.threads - base.threads,
            "pool_workers_started": sorted(n for n in new if n.rpartition("_")[0] in pools),
            "unexplained": sorted(n for n in new if n.rpartition("_")[0] not in pools),
            "native": native,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "thread_growth": self.thread_growth(),
            "start": self.start.as_dict(),
            "baseline": self.baseline.as_dict(),
            "end": self.end.as_dict(),
            "rss_growth_mb": self.rss_growth_mb,
            "rss_slope_mb_per_100_cycles": self.rss_slope_mb_per_100(),
            "outcomes": dict(Counter(c.outcome for c in self.cycles)),
            "cycle_seconds": summarize([c.seconds for c in self.cycles]),
            "peer_connections_alive": self.peer_connections_alive,
            "cycles": [asdict(c) for c in self.cycles],
        }


def _is_worker(name: str) -> bool:
    """ThreadPoolExecutor names its workers `<prefix>_<n>`."""
    prefix, _, number = name.rpartition("_")
    return bool(prefix) and number.isdigit()


def loud(client: AgentClient, since: int) -> bool:
    return any(rms(chunk) > LOUD_RMS for chunk in client.received.chunks[since:])


async def wait_for_reply(client: AgentClient, full_turn: bool, timeout: float) -> str:
    if full_turn:
        event = await client.wait_for_event(
            lambda e: e.get("type") in ("turn_metrics", "error"), timeout=timeout, since=0
        )
        return "turn_done" if event["type"] == "turn_metrics" else f"error: {event['message']}"
    since, deadline = len(client.received.chunks), time.monotonic() + timeout
    while not loud(client, since):  # the client records audio without telling anyone
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.02)
    return "reply_heard"


async def one_cycle(
    url: str, utterance: Utterance, full_turn: bool, timeout: float
) -> tuple[str, bool, float]:
    """(outcome, whether a transcript came, seconds) of one connect, talk, close."""
    began = time.perf_counter()
    client = AgentClient(url)
    transcript = False
    try:
        await client.connect()
        await client.wait_channel_open()
        client.mic.play(utterance.pcm, utterance.rate)
        outcome = await wait_for_reply(client, full_turn, timeout)
        transcript = any(e.data.get("type") == "transcript" for e in client.events)
    except TimeoutError:
        outcome = "timeout"
    except (aiohttp.ClientError, ConnectionRefusedError) as exc:
        outcome = f"error: {type(exc).__name__}: {exc}"
    finally:
        await client.close()
    return outcome, transcript, time.perf_counter() - began


def settled_snapshot() -> ProcessSnapshot:
    gc.collect()
    return snapshot()


async def wait_back_to(baseline: ProcessSnapshot, timeout: float) -> ProcessSnapshot:
    """The process once fds, tasks and native threads are back to `baseline` (or at the
    timeout): a closed peer's last tasks and sockets go within a few event-loop turns.
    Python pool workers are left out here: a pool keeps the workers it started."""

    def native(s: ProcessSnapshot) -> int:
        return s.threads - len(s.python_threads)

    deadline = time.monotonic() + timeout
    while True:
        now = settled_snapshot()
        back = (
            native(now) <= native(baseline)
            and now.fds <= baseline.fds
            and (now.tasks or 0) <= (baseline.tasks or 0)
        )
        if back or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.1)


def count_peer_connections() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is RTCPeerConnection)


async def run_soak(
    url: str,
    sessions: SessionRegistry,
    utterance: Utterance,
    settings: SoakSettings,
    on_cycle: Callable[[CycleResult], None] = lambda _: None,
) -> SoakResult:
    start = settled_snapshot()
    # Other code in this process (a test run) may hold peer connections of its own.
    peers_before = count_peer_connections()
    baseline: ProcessSnapshot | None = None
    cycles: list[CycleResult] = []
    index = 0
    while index < settings.cycles:
        if baseline is None and index >= settings.warmup:
            await asyncio.sleep(0.5)  # the last warm-up peers' sockets and tasks go
            baseline = settled_snapshot()
        batch = range(index, min(index + settings.concurrency, settings.cycles))
        # A whole round waits for full turns or for first sounds, so no cycle idles while
        # its neighbour plays a whole reply.
        rounds = index // settings.concurrency
        full_turn = rounds % settings.full_turn_every == settings.full_turn_every - 1
        done = await asyncio.gather(
            *(one_cycle(url, utterance, full_turn, settings.reply_timeout_s) for _ in batch)
        )
        now = settled_snapshot()
        for i, (outcome, transcript, seconds) in zip(batch, done, strict=True):
            result = CycleResult(
                i, outcome, round(seconds, 3), transcript, now.rss_mb, now.threads, now.fds,
                now.tasks, len(sessions),
            )  # fmt: skip
            cycles.append(result)
            on_cycle(result)
        index = batch.stop
    if baseline is None:  # no cycle after the warm-up: the baseline is the end
        baseline = settled_snapshot()
    end = await wait_back_to(baseline, settings.settle_s)
    peers_left = count_peer_connections() - peers_before
    return SoakResult(settings, start, baseline, end, cycles, peers_left)


# -- the command ----------------------------------------------------------------------


def markdown(data: dict[str, Any]) -> str:
    meta, s = data["meta"], data["soak"]
    base, start, end = s["baseline"], s["start"], s["end"]
    growth = s["thread_growth"]
    settings = s["settings"]
    rows = [
        ("RSS (MB)", start["rss_mb"], base["rss_mb"], end["rss_mb"]),
        ("threads", start["threads"], base["threads"], end["threads"]),
        ("file descriptors", start["fds"], base["fds"], end["fds"]),
        ("asyncio tasks", start["tasks"], base["tasks"], end["tasks"]),
    ]
    lines = [
        f"# Soak: {settings['cycles']} connect, talk, close cycles",
        "",
        f"Machine: {machine.one_line(meta['machine'])}; load average at the start "
        f"{meta['machine'].get('load_average')}. {meta['note']}",
        f"Command: `{meta['command']}`. Models: profile **{meta['profile']}** "
        f"({machine.models_note(meta['profile'])}). Server and client in one process.",
        "",
        f"RSS growth after the {settings['warmup']} warm-up cycles: **{s['rss_growth_mb']} MB** "
        f"(least-squares slope {s['rss_slope_mb_per_100_cycles']} MB per 100 cycles). "
        f"Peer connection objects alive at the end: {s['peer_connections_alive']}.",
        "",
        f"Threads beyond the baseline: {growth['threads']}: thread-pool workers started "
        f"lazily by pools that existed at the baseline {growth['pool_workers_started']}, "
        f"unexplained Python threads {growth['unexplained']}, native threads "
        f"{growth['native']:+d}.",
        "",
        "| | before cycle 1 | after warm-up (baseline) | end |",
        "|---|---|---|---|",
        *(f"| {name} | {a} | {b} | {c} |" for name, a, b, c in rows),
        "",
        f"Outcomes: {', '.join(f'{k} {v}' for k, v in sorted(s['outcomes'].items()))}. "
        f"Cycle time (s): median {s['cycle_seconds']['median']}, p90 {s['cycle_seconds']['p90']}, "
        f"max {s['cycle_seconds']['max']}.",
        "",
        "RSS after every 25th cycle (gc collected first):",
        "",
        "| cycle | RSS (MB) | threads | fds | tasks |",
        "|---|---|---|---|---|",
    ]
    for c in s["cycles"]:
        if (c["index"] + 1) % 25 == 0 or c["index"] == 0:
            lines.append(
                f"| {c['index'] + 1} | {c['rss_mb']} | {c['threads']} | {c['fds']} | {c['tasks']} |"
            )
    return "\n".join(lines) + "\n"


async def soak_command(args: argparse.Namespace) -> dict[str, Any]:
    from agent.app.runtime import Runtime

    config = one_address_config(
        AppConfig(
            models=ModelConfig(models_dir=args.models, profile=args.profile, offline=True),
            conversation=ConversationConfig(max_reply_tokens=args.max_reply_tokens),
        )
    )
    utterance = synthesize_utterance("soak", SENTENCE, "en-us", 170)
    runtime = await Runtime.load(config)
    settings = SoakSettings(cycles=args.cycles, warmup=args.warmup, concurrency=args.concurrency)

    def progress(c: CycleResult) -> None:
        print(
            f"cycle {c.index + 1}/{settings.cycles}: {c.outcome} in {c.seconds:.2f} s, "
            f"RSS {c.rss_mb} MB, threads {c.threads}, fds {c.fds}, tasks {c.tasks}",
            file=sys.stderr,
        )

    try:
        async with served(config, runtime) as server:
            result = await run_soak(server.url, server.sessions, utterance, settings, progress)
    finally:
        runtime.close()
    return {
        "meta": {
            "started": args.started,
            "command": "python -m benchmarks.soak " + shlex.join(sys.argv[1:]),
            "profile": args.profile,
            "machine": machine.describe(),
            "note": args.note,
        },
        "soak": result.as_dict(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=300, help="connect, talk, close cycles")
    parser.add_argument("--warmup", type=int, default=20, help="cycles before the baseline")
    parser.add_argument("--models", type=Path, required=True, help="models directory")
    parser.add_argument("--profile", default="tiny", choices=PROFILE_NAMES)
    parser.add_argument("--concurrency", type=int, default=1, help="cycles side by side")
    parser.add_argument(
        "--max-reply-tokens", type=int, default=4, help="longest reply (a full turn plays it)"
    )
    parser.add_argument("--note", default="", help="a remark for the report (a busy machine)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/soak"))
    apply_environment(parser)
    args = parser.parse_args()
    args.started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    logging.basicConfig(level=logging.WARNING)
    data = asyncio.run(soak_command(args))
    write_results(args.out, data, markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
