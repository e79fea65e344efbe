"""`voice-agent bench`: measure mouth-to-ear latency from outside, as a client does."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from agent.config import ConversationConfig
from agent.models.registry import PROFILE_NAMES

log = logging.getLogger(__name__)


def _sessions(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("sessions must be positive integers, e.g. 1,2,4")
    return values


def without_secrets(argv: list[str]) -> list[str]:
    """`argv` with the value of `--token` hidden, for the results, which are shared."""
    shown: list[str] = []
    for arg in argv:
        if shown and shown[-1] == "--token":
            shown.append("...")
        elif arg.startswith("--token="):
            shown.append("--token=...")
        else:
            shown.append(arg)
    return shown


def register(subparsers: Any) -> None:
    """Add the `bench` command to the `voice-agent` command's subparsers."""
    bench: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="measure mouth-to-ear latency with headless WebRTC clients",
        description="Connect headless WebRTC clients to a running agent (POST /offer, as the "
        "browser does), play utterances as their microphones in real time, and time the "
        "agent's answers at the clients' ears; write JSON, a Markdown summary and plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    target = bench.add_argument_group("target")
    target.add_argument("--url", default="http://127.0.0.1:8080", help="the agent's base URL")
    target.add_argument(
        "--token",
        default=None,
        help="the agent's access token, sent as `Authorization: Bearer` with each offer and "
        "DELETE (and given to a launched server); prefer VOICE_AGENT_TOKEN: other local "
        "users can read command lines",
    )
    target.add_argument(
        "--launch",
        action="store_true",
        help="start `voice-agent serve` on the URL's host and port first (with --models, "
        "--profile, --endpoint-ms, --max-reply-tokens, --first-chunk-words, --token, and no "
        "per-address limits: "
        "--max-sessions-per-ip 0 --offer-rate 0), and stop it at the end",
    )
    target.add_argument(
        "--models",
        type=Path,
        default=None,
        help="models directory, for --launch and for the compute floor (which runs on this "
        "machine; without --models there is no floor)",
    )
    target.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        default=None,
        help="model profile (for --launch and the floor; default: the server's, from /health)",
    )
    target.add_argument(
        "--endpoint-ms",
        type=int,
        default=ConversationConfig().endpoint_ms,
        help="the server's endpoint silence, passed to a launched server and used by the floor",
    )
    target.add_argument(
        "--max-reply-tokens",
        type=int,
        default=ConversationConfig().max_reply_tokens,
        help="longest reply, passed to a launched server and used by the floor",
    )
    target.add_argument(
        "--first-chunk-words",
        type=int,
        default=ConversationConfig().first_chunk_words,
        help="most words of a reply's first chunk, passed to a launched server and used by "
        "the floor",
    )
    run = bench.add_argument_group("run")
    run.add_argument(
        "--utterances",
        type=Path,
        default=None,
        help="directory of WAV files (a .txt beside each gives its text); default: an "
        "espeak-ng corpus of 25 utterances",
    )
    run.add_argument(
        "--save-corpus", type=Path, default=None, help="write the generated corpus here as WAVs"
    )
    run.add_argument(
        "--sessions",
        type=_sessions,
        default="1",
        help="concurrent sessions, or a sweep such as 1,2,4 (one run per value)",
    )
    run.add_argument("--turns", type=int, default=10, help="measured turns per session")
    run.add_argument("--warmup", type=int, default=1, help="unmeasured turns first, per session")
    run.add_argument(
        "--barge-in", type=int, default=2, help="barge-in turns per session (after the turns)"
    )
    run.add_argument(
        "--barge-in-after",
        type=float,
        default=0.3,
        help="seconds of agent speech the user lets play before talking over it",
    )
    run.add_argument(
        "--gap", type=float, default=1.0, help="seconds of silence between the reply and the next"
    )
    run.add_argument(
        "--turn-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for a reply before giving up on a turn",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the utterance order")
    out = bench.add_argument_group("output")
    out.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="directory for the outputs"
    )
    out.add_argument("--no-floor", action="store_true", help="skip the compute floor")
    out.add_argument(
        "--floor-repeats", type=int, default=1, help="passes over the corpus for the floor"
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if args.launch and (args.models is None or args.profile is None):
        print("voice-agent bench: --launch needs --models and --profile", file=sys.stderr)
        return 2
    try:
        return asyncio.run(bench(args))
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"voice-agent bench: {exc}", file=sys.stderr)
        return 1


@contextlib.asynccontextmanager
async def launched(args: argparse.Namespace) -> AsyncIterator[None]:
    """A `voice-agent serve` child on the URL's port, ready before the body runs."""
    if not args.launch:
        yield
        return
    from benchmarks import harness

    url = urlparse(args.url)
    serve_args = [
        "--models", str(args.models),
        "--profile", args.profile,
        "--offline",
        "--endpoint-ms", str(args.endpoint_ms),
        "--max-reply-tokens", str(args.max_reply_tokens),
        "--first-chunk-words", str(args.first_chunk_words),
        "--max-sessions", str(max(max(args.sessions), 8)),
    ]  # fmt: skip
    async with harness.launched(
        serve_args,
        args.out / "server.log",
        host=url.hostname or "127.0.0.1",
        port=url.port or 8080,
        token=args.token,
    ):
        yield


async def bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from benchmarks import corpus as corpora
    from benchmarks import floor, machine, report, runner

    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    utterances = (
        corpora.load_directory(args.utterances)
        if args.utterances
        else corpora.default_corpus(args.save_corpus)
    )
    settings = runner.RunSettings(
        url=args.url,
        turns=args.turns,
        warmup=args.warmup,
        barge_ins=args.barge_in,
        gap_s=args.gap,
        turn_timeout_s=args.turn_timeout,
        barge_in_after_s=args.barge_in_after,
        seed=args.seed,
        token=args.token,
    )
    flags = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("func", "command", "log_level", "token")
    }
    if args.token is not None:
        flags["token"] = "(given)"  # results are shared; the secret stays out of them
    runs: list[dict[str, Any]] = []
    total = sum(n * (args.warmup + args.turns + args.barge_in) for n in args.sessions)
    async with launched(args):
        health = await runner.fetch_health(args.url)
        with tqdm(total=total, desc="turns", unit="turn", disable=args.no_progress) as bar:

            def on_turn(turn: runner.TurnResult) -> None:
                bar.update(1)
                bar.set_postfix(
                    sessions=turn.sessions,
                    last=turn.status
                    if turn.mouth_to_ear_ms is None
                    else f"{turn.mouth_to_ear_ms:.0f} ms",
                )

            for sessions in args.sessions:
                began = datetime.datetime.now(datetime.UTC)
                turns = await runner.run_sessions(utterances, settings, sessions, on_turn)
                wall = (datetime.datetime.now(datetime.UTC) - began).total_seconds()
                runs.append(
                    {
                        "sessions": sessions,
                        "wall_s": round(wall, 1),
                        "turns": [t.as_dict() for t in turns],
                    }
                )
    floor_results = None
    profile = args.profile or health.get("models", {}).get("profile")
    if not args.no_floor and args.models is not None:
        print("measuring the compute floor ...", file=sys.stderr)
        conversation = ConversationConfig(
            endpoint_ms=args.endpoint_ms,
            max_reply_tokens=args.max_reply_tokens,
            first_chunk_words=args.first_chunk_words,
        )
        measured = await floor.measure(
            utterances, args.models, profile, conversation, repeats=args.floor_repeats
        )
        floor_results = [f.as_dict() for f in measured]
    result: dict[str, Any] = {
        "meta": {
            "started": started,
            "command": "voice-agent " + shlex.join(without_secrets(sys.argv[1:]))
            if sys.argv and "bench" in sys.argv
            else "voice-agent bench",
            "url": args.url,
            "flags": flags,
            "server": health,
            "machine": machine.describe(),
            "corpus": [
                {
                    "name": u.name,
                    "text": u.text,
                    "duration_s": round(u.duration_s, 3),
                    "speech_end_s": round(u.speech_end_s, 3),
                    "has_pause": u.has_pause,
                }
                for u in utterances
            ],
            "cwd": os.getcwd(),
        },
        "runs": runs,
        "floor": floor_results,
    }
    written = report.write_all(result, args.out)
    by = result["summary"]["by_sessions"]
    for n, s in by.items():
        m = s["metrics"]["mouth_to_ear_ms"]
        print(f"{n} session(s): mouth-to-ear p50 {m['p50']} ms, p90 {m['p90']} ms (n={m['n']})")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


__all__ = ["register", "run_bench"]
