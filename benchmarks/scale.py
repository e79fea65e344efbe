"""`python -m benchmarks.scale`: `voice-agent bench` through HAProxy in front of several
replicas (signaling.cluster), at 1, 2, 4 and 8 sessions, once with each replica running its
own language model and once with all of them sharing one inference server
(llama_cpp.server). Each mode's bench output goes to OUT/<mode>/ (with its processes' logs
in OUT/<mode>/logs/), and OUT/summary.md and OUT/results.json compare the two, with the
machine they ran on.

    python -m benchmarks.scale --models DIR --profile cpu --replicas 2 -- --turns 10

Arguments after `--` go to `voice-agent bench` (--turns, --barge-in, --gap, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import secrets
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.config import ConversationConfig
from agent.config.env import apply_environment
from agent.models.registry import PROFILE_NAMES
from benchmarks import machine
from benchmarks.harness import free_port
from signaling.cluster import ClusterError, ClusterSettings, cluster

MODES = ("in-process", "shared")
DEFAULT_OUT = Path("benchmarks/results/scale")


def cluster_settings(args: argparse.Namespace, mode: str, out: Path) -> ClusterSettings:
    first = free_port()
    return ClusterSettings(
        replicas=args.replicas,
        port=free_port(),
        first_replica_port=first,
        stats_port=free_port(),
        llm="in-process" if mode == "in-process" else "shared",
        llm_port=free_port(),
        llm_context=args.llm_context,
        log_dir=out / "logs",
        serve_args=(
            "--models", str(args.models), "--profile", args.profile, "--offline",
            "--max-sessions", str(max(args.sessions)),
            "--llm-context", str(args.llm_context),
            "--max-reply-tokens", str(args.max_reply_tokens),
            # Every bench client comes from 127.0.0.1, through HAProxy.
            "--max-sessions-per-ip", "0", "--offer-rate", "0",
        ),
        token=secrets.token_hex(16),
    )  # fmt: skip


async def bench_mode(args: argparse.Namespace, mode: str, bench_args: Sequence[str]) -> Path:
    out: Path = args.out / mode
    settings = cluster_settings(args, mode, out)
    async with cluster(settings):
        command = [
            sys.executable, "-m", "agent", "bench",
            "--url", f"http://127.0.0.1:{settings.port}",
            "--token", settings.token,
            "--sessions", ",".join(str(n) for n in args.sessions),
            "--out", str(out), "--no-progress", "--no-floor",
            *bench_args,
        ]  # fmt: skip
        print(f"== {mode}: {shlex.join(command).replace(settings.token, '***')}", flush=True)
        child = await asyncio.create_subprocess_exec(*command)
        try:
            code = await child.wait()
        finally:
            if child.returncode is None:  # cancelled: SIGINT or SIGTERM
                child.terminate()
                await child.wait()
        if code != 0:
            raise ClusterError(f"voice-agent bench failed ({code}) in mode {mode}")
    return out / "results.json"


def compare(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Scale-out: replicas behind HAProxy, LLM in each process vs one shared server",
        "",
        f"Command: `{meta['command']}`  ",
        f"Started: {meta['started']}; {meta['replicas']} replicas, profile {meta['profile']}.",
        "",
        "| mode | sessions | turns ok | mouth-to-ear p50 | p90 | LLM first token p50 | p90 |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, result in results.items():
        for n, entry in result["summary"]["by_sessions"].items():
            m2e = entry["metrics"]["mouth_to_ear_ms"]
            llm = entry["server"]["llm_first_token_ms"]
            lines.append(
                f"| {mode} | {n} | {m2e['n']} | {m2e['p50']} ms | {m2e['p90']} ms "
                f"| {llm['p50']} ms | {llm['p90']} ms |"
            )
    described = meta["machine"]
    lines += [
        "",
        f"Machine: {described.get('cpu')}, {described.get('cores')} cores, "
        f"{described.get('memory_gib')} GiB, GPUs: {described.get('gpus') or 'none'}, "
        f"{described.get('os')}; load average at start {described.get('load_average')}.",
        "",
        "LLM first token is measured from the end of the user's speech, as in "
        "`turn_metrics`. Each mode's full report is in its own directory.",
        "",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace, bench_args: Sequence[str]) -> int:
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    meta = {
        "started": started,
        "command": "python -m benchmarks.scale " + shlex.join(sys.argv[1:]),
        "replicas": args.replicas,
        "profile": args.profile,
        "machine": machine.describe(),
    }
    results: dict[str, dict[str, Any]] = {}
    # SIGTERM cancels the run like Ctrl-C does, so that every process it started is stopped.
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        for mode in args.modes:
            path = await bench_mode(args, mode, bench_args)
            results[mode] = json.loads(path.read_text())
    except ClusterError as exc:
        print(f"benchmarks.scale: {exc}", file=sys.stderr)
        return 1
    summary = compare(results, meta)
    combined = {
        "meta": meta,
        "modes": {mode: r["summary"]["by_sessions"] for mode, r in results.items()},
    }
    (args.out / "results.json").write_text(json.dumps(combined, indent=2) + "\n")
    (args.out / "summary.md").write_text(summary)
    print(summary)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, bench_args = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="voice-agent bench through HAProxy, LLM in each replica vs shared.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--models", type=Path, required=True, help="models directory")
    parser.add_argument("--profile", choices=PROFILE_NAMES, required=True)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument(
        "--sessions",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 4, 8],
        help="comma-separated session counts",
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--llm-context", type=int, default=4096)
    parser.add_argument(
        "--max-reply-tokens",
        type=int,
        default=ConversationConfig().max_reply_tokens,
        help="the replicas' reply cap (a short one makes a quick trial run)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    apply_environment(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run(args, bench_args))


if __name__ == "__main__":
    sys.exit(main())
