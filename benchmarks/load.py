"""Load: the server's event-loop lag under concurrent talking sessions, the CPU cost of one
listening session, and how fast offers beyond the session cap are refused.

    python -m benchmarks.load --models DIR --profile tiny --sessions 1,2,4,8

The command starts `voice-agent serve` as a child process (its event loop and CPU time are
its own; the clients run here) and measures, in order:

  idle       no session: the server's CPU per second, and its loop lag;
  listening  K clients connected with open, silent microphones (a browser sends audio frames
             all the time): CPU per second minus idle, divided by K, is one listening
             session's cost;
  talking    N clients talking at once through the bench's driver (utterances, replies,
             barge-ins): the loop lag over the run, from the server's own histogram;
  over cap   the cap's worth of sessions connected, then more offers, one by one and in a
             burst: each must be refused with 503 and Retry-After, fast.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil

from agent.config.env import apply_environment
from agent.models.registry import PROFILE_NAMES
from benchmarks import machine, runner
from benchmarks.corpus import Utterance, default_corpus, load_directory
from benchmarks.harness import cpu_seconds, launched, summarize, write_results
from benchmarks.lag import scrape_lag
from benchmarks.load_report import markdown
from benchmarks.peer import AgentClient, close_clients, offer_sdp

SETTLE_S = 2.0
"""After connecting clients: ICE, DTLS and the first seconds of media settle."""


@dataclass(frozen=True)
class LoadSettings:
    url: str
    cap: int
    """The server's --max-sessions."""
    talking: tuple[int, ...] = (1, 2, 4, 8)
    listening: tuple[int, ...] = (1, 4, 8)
    windows: int = 6
    window_s: float = 5.0
    """CPU is sampled over `windows` windows of `window_s`: medians, not one reading."""
    turns: int = 5
    barge_ins: int = 1
    gap_s: float = 1.0
    turn_timeout_s: float = 60.0
    refusals: int = 30
    burst: int = 10


Progress = Callable[[str], None]


async def cpu_rates(process: psutil.Process, windows: int, window_s: float) -> list[float]:
    """The process's CPU seconds per wall second, once per window."""
    rates = []
    for _ in range(windows):
        before, started = cpu_seconds(process), time.monotonic()
        await asyncio.sleep(window_s)
        rates.append((cpu_seconds(process) - before) / (time.monotonic() - started))
    return rates


async def connect_listener(url: str, http: aiohttp.ClientSession) -> AgentClient:
    client = AgentClient(url)
    try:
        await client.connect(http)
        await client.wait_channel_open()
    except BaseException:
        await client.close()
        raise
    return client


async def idle_phase(
    settings: LoadSettings, process: psutil.Process, http: aiohttp.ClientSession
) -> dict[str, Any]:
    before = await scrape_lag(http, settings.url)
    rates = await cpu_rates(process, settings.windows, settings.window_s)
    lag = (await scrape_lag(http, settings.url)).minus(before)
    return {"cpu_per_s": summarize(rates, 4), "lag": lag.summary()}


async def listening_phase(
    settings: LoadSettings,
    process: psutil.Process,
    http: aiohttp.ClientSession,
    progress: Progress,
) -> list[dict[str, Any]]:
    clients: list[AgentClient] = []
    results: list[dict[str, Any]] = []
    try:
        for k in sorted(settings.listening):
            while len(clients) < k:
                clients.append(await connect_listener(settings.url, http))
            await asyncio.sleep(SETTLE_S)
            before = await scrape_lag(http, settings.url)
            rates = await cpu_rates(process, settings.windows, settings.window_s)
            lag = (await scrape_lag(http, settings.url)).minus(before)
            results.append({"sessions": k, "cpu_per_s": summarize(rates, 4), "lag": lag.summary()})
            progress(f"listening {k}: CPU {results[-1]['cpu_per_s']['median']:.3f} s/s")
    finally:
        await close_clients(clients)
    return results


def per_listening_session(idle: dict[str, Any], listening: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU seconds per second of one listening session: per K, (median - idle median) / K,
    and the slope of a least-squares line through idle and every K."""
    base = idle["cpu_per_s"]["median"]
    per_k = {
        str(r["sessions"]): round((r["cpu_per_s"]["median"] - base) / r["sessions"], 4)
        for r in listening
    }
    xs = [0] + [r["sessions"] for r in listening]
    ys = [base] + [r["cpu_per_s"]["median"] for r in listening]
    slope = float(np.polyfit(xs, ys, 1)[0]) if len(xs) > 1 else float("nan")
    return {"by_sessions": per_k, "slope": round(slope, 4)}


async def talking_phase(
    settings: LoadSettings,
    corpus: Sequence[Utterance],
    process: psutil.Process,
    http: aiohttp.ClientSession,
    progress: Progress,
) -> list[dict[str, Any]]:
    run_settings = runner.RunSettings(
        url=settings.url,
        turns=settings.turns,
        warmup=1,
        barge_ins=settings.barge_ins,
        gap_s=settings.gap_s,
        turn_timeout_s=settings.turn_timeout_s,
    )
    results: list[dict[str, Any]] = []
    for n in settings.talking:
        before, cpu_before, started = (
            await scrape_lag(http, settings.url),
            cpu_seconds(process),
            time.monotonic(),
        )
        turns = await runner.run_sessions(corpus, run_settings, n)
        wall = time.monotonic() - started
        cpu = (cpu_seconds(process) - cpu_before) / wall
        lag = (await scrape_lag(http, settings.url)).minus(before)
        measured = [t for t in turns if t.kind == "turn"]
        m2e = [t.mouth_to_ear_ms for t in measured if t.mouth_to_ear_ms is not None]
        results.append(
            {
                "sessions": n,
                "wall_s": round(wall, 1),
                "cpu_per_s": round(cpu, 4),
                "lag": lag.summary(),
                "turn_status": dict(Counter(t.status for t in turns)),
                "mouth_to_ear_ms": summarize(m2e, 1) if m2e else None,
            }
        )
        progress(f"talking {n}: lag {results[-1]['lag']}")
    return results


@dataclass
class Refusal:
    status: int
    seconds: float
    retry_after: str | None


async def post_offer(http: aiohttp.ClientSession, url: str, sdp: str) -> Refusal:
    started = time.perf_counter()
    async with http.post(f"{url}/offer", json={"sdp": sdp, "type": "offer"}) as response:
        await response.read()
        return Refusal(
            response.status, time.perf_counter() - started, response.headers.get("Retry-After")
        )


async def over_cap_phase(
    settings: LoadSettings, http: aiohttp.ClientSession, progress: Progress
) -> dict[str, Any]:
    sdp = await offer_sdp()  # refused at the cap before a peer exists: reusable
    clients: list[AgentClient] = []
    try:
        for _ in range(settings.cap):
            clients.append(await connect_listener(settings.url, http))
        # The lag is read over the full server listening to the cap's worth of sessions,
        # then refusing: the refusals alone are over in a few tens of milliseconds.
        before = await scrape_lag(http, settings.url)
        await asyncio.sleep(SETTLE_S)
        one_by_one = [await post_offer(http, settings.url, sdp) for _ in range(settings.refusals)]
        burst = await asyncio.gather(
            *(post_offer(http, settings.url, sdp) for _ in range(settings.burst))
        )
        lag = (await scrape_lag(http, settings.url)).minus(before)
    finally:
        await close_clients(clients)
    # The cap frees with the sessions: the next offer is answered again.
    again = AgentClient(settings.url)
    try:
        accepted_after = (await again.connect(http))["type"] == "answer"
    except ConnectionRefusedError:
        accepted_after = False
    finally:
        await again.close()
    refusals = [*one_by_one, *burst]
    result = {
        "statuses": dict(Counter(r.status for r in refusals)),
        "all_have_retry_after": all(r.retry_after for r in refusals if r.status == 503),
        "one_by_one_ms": summarize([r.seconds * 1000 for r in one_by_one], 2),
        "burst_ms": summarize([r.seconds * 1000 for r in burst], 2),
        "lag": lag.summary(),
        "accepted_after_sessions_closed": accepted_after,
    }
    progress(f"over cap: {result['statuses']}, one by one {result['one_by_one_ms']} ms")
    return result


async def measure(
    settings: LoadSettings,
    corpus: Sequence[Utterance],
    process: psutil.Process,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Every phase against the server at `settings.url`, whose process is `process`."""
    if max(settings.talking) > settings.cap or max(settings.listening) > settings.cap:
        raise ValueError("talking and listening sessions must stay under the session cap")
    async with aiohttp.ClientSession() as http:
        idle = await idle_phase(settings, process, http)
        progress(f"idle: CPU {idle['cpu_per_s']['median']:.3f} s/s, lag {idle['lag']}")
        listening = await listening_phase(settings, process, http, progress)
        talking = await talking_phase(settings, corpus, process, http, progress)
        over_cap = await over_cap_phase(settings, http, progress)
    return {
        "settings": asdict(settings),
        "idle": idle,
        "listening": listening,
        "cpu_per_listening_session": per_listening_session(idle, listening),
        "talking": talking,
        "over_cap": over_cap,
    }


# -- the command ----------------------------------------------------------------------


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("session counts must be positive, e.g. 1,2,4")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", type=Path, required=True, help="models directory")
    parser.add_argument("--profile", default="tiny", choices=PROFILE_NAMES)
    parser.add_argument("--sessions", type=_counts, default=(1, 2, 4, 8), help="talking sweep")
    parser.add_argument("--listening", type=_counts, default=(1, 4, 8), help="listening sweep")
    parser.add_argument("--cap", type=int, default=None, help="--max-sessions (default: max N)")
    parser.add_argument("--windows", type=int, default=6, help="CPU windows per point")
    parser.add_argument("--window-s", type=float, default=5.0, help="seconds per CPU window")
    parser.add_argument("--turns", type=int, default=5, help="measured turns per talking client")
    parser.add_argument("--barge-in", type=int, default=1, help="barge-ins per talking client")
    parser.add_argument("--max-reply-tokens", type=int, default=48, help="longest reply")
    parser.add_argument("--utterances", type=Path, default=None, help="WAV directory")
    parser.add_argument("--note", default="", help="a remark for the report (a busy machine)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/load"))
    apply_environment(parser)
    return parser.parse_args(argv)


async def load_command(args: argparse.Namespace) -> dict[str, Any]:
    cap = args.cap or max(*args.sessions, *args.listening)
    corpus = load_directory(args.utterances) if args.utterances else default_corpus()
    serve_args = [
        "--models", str(args.models), "--profile", args.profile, "--offline",
        "--max-sessions", str(cap), "--max-reply-tokens", str(args.max_reply_tokens),
    ]  # fmt: skip
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    described = machine.describe()  # before the load: its load average says who else ran
    async with launched(serve_args, args.out / "server.log") as server:
        settings = LoadSettings(
            url=server.url, cap=cap, talking=args.sessions, listening=args.listening,
            windows=args.windows, window_s=args.window_s, turns=args.turns,
            barge_ins=args.barge_in,
        )  # fmt: skip
        result = await measure(
            settings, corpus, server.process, lambda m: print(m, file=sys.stderr)
        )
    return {
        "meta": {
            "started": started,
            "command": "python -m benchmarks.load " + shlex.join(sys.argv[1:]),
            "profile": args.profile,
            "machine": described,
            "note": args.note,
        },
        "load": result,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = asyncio.run(load_command(args))
    write_results(args.out, data, markdown(data))
    return 0


__all__ = ["LoadSettings", "main", "measure"]


if __name__ == "__main__":
    sys.exit(main())
