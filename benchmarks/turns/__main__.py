"""The labelled turn-taking benchmark: complete and unfinished utterances, noises, echo,
backchannels and interruptions over the agent's voice, each case through the real pipeline
over real WebRTC, scored per category against the targets.

    python -m benchmarks.turns --launch --models .cache/models --cases 20

`--launch` starts `voice-agent serve --profile small --offline` on those models (its log is
written to OUT/server.log); `--url` measures a server that is already running (started with
`--max-sessions-per-ip 0 --offer-rate 0`: one fresh session per case). The corpus is spoken
at run time by espeak-ng and the Piper voice of the models directory.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent.config import ModelConfig
from agent.config.env import apply_environment
from agent.models.device import detect_device
from agent.models.loaders import load_piper
from agent.models.resolve import resolve_models
from agent.stages.tts.piper import PiperSynthesizer
from benchmarks import machine
from benchmarks.harness import launched
from benchmarks.runner import fetch_health
from benchmarks.turns import report
from benchmarks.turns.baseline import transcribe_directly
from benchmarks.turns.corpus import CATEGORIES, Case, Voices, build_corpus, complete_case
from benchmarks.turns.run import CaseTiming, Observation, run_case
from benchmarks.turns.score import score

log = logging.getLogger("benchmarks.turns")


def _categories(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in CATEGORIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"categories are some of {', '.join(CATEGORIES)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.turns",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", type=Path, default=Path(".cache/models"), help="models dir")
    parser.add_argument("--profile", default="small", help="the models' profile")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/turns"))
    parser.add_argument("--cases", type=int, default=20, help="cases per category")
    parser.add_argument(
        "--categories", type=_categories, default=CATEGORIES, help="comma-separated subset"
    )
    parser.add_argument("--launch", action="store_true", help="start the server (else --url)")
    parser.add_argument("--url", default=None, help="a running server (without --launch)")
    parser.add_argument("--token", default=None, help="the server's access token")
    parser.add_argument(
        "--server-args", default="", help="more `serve` flags for --launch, as one string"
    )
    parser.add_argument("--seed", type=int, default=0, help="orders the cases, shapes noises")
    parser.add_argument("--note", default="", help="a remark for the report (a busy machine)")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="run nothing: score OUT/results.json's cases again and rewrite the outputs",
    )
    apply_environment(parser)
    args = parser.parse_args(argv)
    if not args.rescore and args.launch == (args.url is not None):
        parser.error("give exactly one of --launch and --url")
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    return args


def voices(models: Path, profile: str) -> Voices:
    resolved = resolve_models(ModelConfig(models_dir=models, profile=profile, offline=True))
    if resolved.tts != "piper":
        raise SystemExit(f"the corpus needs a Piper voice; profile {profile} has {resolved.tts}")
    return Voices(PiperSynthesizer(load_piper(resolved.voice, detect_device("cpu"))))


async def run_cases(
    url: str, cases: Sequence[Case], warmup: Case, timing: CaseTiming, token: str | None
) -> tuple[list[Observation], float]:
    """Every case one after the other, after one warm-up case; and the seconds they took."""
    await run_case(url, warmup, timing, token)
    started = time.monotonic()
    observations = []
    for index, case in enumerate(cases, 1):
        observation = await run_case(url, case, timing, token)
        observations.append(observation)
        print(f"[{index}/{len(cases)}] {report.one_line(case, observation)}", file=sys.stderr)
    return observations, time.monotonic() - started


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    # Loading the voice and speaking the corpus take seconds: off the event loop.
    speakers = await asyncio.to_thread(voices, args.models, args.profile)
    cases = await asyncio.to_thread(build_corpus, speakers, args.cases, args.seed, args.categories)
    warmup = await asyncio.to_thread(complete_case, speakers, 0, random.Random(args.seed))
    timing = CaseTiming()
    load_average = machine.describe().get("load_average")
    serve_args = ["--models", str(args.models), "--profile", args.profile, "--offline"]
    serve_args += shlex.split(args.server_args)
    if args.launch:
        log_path = args.out / "server.log"
        async with launched(serve_args, log_path, token=args.token) as server:
            health = await fetch_health(server.url)
            observations, seconds = await run_cases(server.url, cases, warmup, timing, args.token)
    else:
        health = await fetch_health(args.url)
        observations, seconds = await run_cases(args.url, cases, warmup, timing, args.token)
    resolved = resolve_models(
        ModelConfig(models_dir=args.models, profile=args.profile, offline=True)
    )
    await asyncio.to_thread(transcribe_directly, cases, observations, resolved.stt)
    rows = []
    for observation in observations:
        data = observation.as_dict()
        rows.append({**data, "score": score(data)})
    return {
        "meta": {
            "started": args.started,
            "command": "python -m benchmarks.turns " + shlex.join(sys.argv[1:]),
            "seed": args.seed,
            "cases_per_category": args.cases,
            "categories": list(args.categories),
            "server_args": serve_args if args.launch else None,
            "server": health,
            "machine": machine.describe() | {"load_average_at_start": load_average},
            "seconds": round(seconds, 1),
            "timing": asdict(timing),
            "note": args.note,
        },
        "cases": rows,
    }


def rescored(out: Path, when: str) -> dict[str, Any]:
    """The run saved in `out`, its cases scored again by this code (the observations, what
    the client saw, are kept as they were measured)."""
    result: dict[str, Any] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    report.rescore(result["cases"])
    result["meta"]["rescored"] = when
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = rescored(args.out, args.started) if args.rescore else asyncio.run(bench(args))
    for path in report.write_all(result, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
