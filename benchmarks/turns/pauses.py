"""The endpoint's inputs at every pause, offline, and the endpoint policy replayed on them.

The live benchmark (`python -m benchmarks.turns`) runs each case over real WebRTC: about ten
seconds a case, so a few dozen cases per run. To choose the endpoint's thresholds, this
study feeds many more of the same corpus's complete and incomplete utterances through the
server's own listening path, called directly: the session's VAD (20 ms blocks, as the
server's drain hands them), and at every pause it finds, Smart Turn and Whisper on the audio
so far, as the server computes them there (the speculative reply's transcript, its last
word's probability). It keeps, per pause: where it is (`end`: after the last word;
`inside`: the user speaks again), the silence the user leaves there, the model's
probability and its compute time, the transcript.

Then it replays the endpoint policy (agent/turntaking/endpoint.py, the same functions) on
those pauses for a grid of settings: per setting, the false ends of turn (the turn ends at a
pause the user speaks after) and the delay of the end of turn on complete utterances. No
Opus here, so the live benchmark stays the judge; this says which setting to give it.

    python -m benchmarks.turns.pauses --models .cache/models --cases 60 \
        --out benchmarks/results/turns/pauses
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from agent.app.runtime import Runtime, session_vad
from agent.audio import STT_RATE, resample_pcm
from agent.config import AppConfig, ConversationConfig, ModelConfig
from agent.turntaking.endpoint import Verdict, Wait, wait_after_pause
from agent.turntaking.segmenter import SpeechPaused, SpeechResumed
from benchmarks import machine
from benchmarks.turns.__main__ import voices
from benchmarks.turns.corpus import Case, build_corpus

BLOCK = STT_RATE // 50
TAIL_S = 3.0
"""Silence fed after each utterance: longer than any ceiling replayed."""


@dataclass
class Pause:
    case: str
    category: str
    kind: str
    speaker: str
    pause_ms: int
    """The VAD setting that found it."""
    where: str
    """"end": after the utterance's last word; "inside": the user speaks again."""
    detected_ms: float
    """Audio from the end of speech to the window that made the pause."""
    silence_ms: float | None
    """Audio from the end of speech to the next speech (None at the end)."""
    probability: float
    turn_ms: float
    transcript: str
    last_word_probability: float | None


@dataclass(frozen=True)
class Policy:
    threshold: float
    sure_incomplete: float
    """Below this probability the transcript cannot shorten the wait."""
    words_ms: int
    max_ms: int
    unsure_ms: int = ConversationConfig.endpoint_unsure_ms


def pauses_of(case: Case, runtime: Runtime, conversation: ConversationConfig) -> list[Pause]:
    """Every pause the session's VAD finds in the case, with what the endpoint would know."""
    assert runtime.turn_model is not None
    vad = session_vad(conversation, semantic=True)
    utterance = case.utterance
    pcm = resample_pcm(utterance.pcm, utterance.rate, STT_RATE)
    pcm = np.concatenate([pcm, np.zeros(round(TAIL_S * STT_RATE), dtype=np.int16)])
    found: list[Pause] = []
    open_pause: tuple[Pause, int] | None = None
    for start in range(0, pcm.size - BLOCK + 1, BLOCK):
        for event in vad.feed(pcm[start : start + BLOCK], 0.0):
            if isinstance(event, SpeechResumed) and open_pause is not None:
                pause, end_sample = open_pause
                pause.silence_ms = (event.onset_sample - end_sample) / STT_RATE * 1000
                open_pause = None
            if isinstance(event, SpeechPaused):
                pause = _pause(case, event, runtime, conversation.pause_ms)
                found.append(pause)
                open_pause = (pause, event.end_sample)
    for pause in found:
        pause.where = "end" if pause.silence_ms is None else "inside"
    return found


def _pause(case: Case, paused: SpeechPaused, runtime: Runtime, pause_ms: int) -> Pause:
    assert runtime.turn_model is not None
    started = time.perf_counter()
    probability = runtime.turn_model.probability(paused.audio)
    turn_ms = (time.perf_counter() - started) * 1000
    transcript = runtime.transcriber.transcribe_blocking(paused.audio)
    return Pause(
        case=case.name,
        category=case.category,
        kind=case.kind,
        speaker=case.speaker,
        pause_ms=pause_ms,
        where="end",
        detected_ms=(paused.decided_sample - paused.end_sample) / STT_RATE * 1000,
        silence_ms=None,
        probability=round(probability, 4),
        turn_ms=round(turn_ms, 1),
        transcript=transcript.text,
        last_word_probability=transcript.last_word_probability,
    )


def decision_ms(pause: Pause, policy: Policy) -> float:
    """When the endpoint ends the turn at this pause, in ms of silence after the speech,
    if the user stays silent (agent/dialogue/turn_end.py's rules)."""
    if not pause.transcript.strip():
        return policy.max_ms
    verdict = Verdict(pause.probability >= policy.threshold, pause.probability)
    wait = wait_after_pause(
        verdict, pause.transcript, pause.last_word_probability, policy.sure_incomplete
    )
    decided = pause.detected_ms + pause.turn_ms
    if wait is Wait.NONE:
        return decided
    if wait is Wait.WORDS:
        return max(policy.words_ms, decided)
    return max(policy.unsure_ms, decided) if wait is Wait.UNSURE else policy.max_ms


def replay(pauses: Sequence[Pause], policy: Policy) -> dict[str, Any]:
    """The policy on every case's pauses, in order: where each case's turn ended."""
    by_case: dict[str, list[Pause]] = {}
    for pause in pauses:
        by_case.setdefault(pause.case, []).append(pause)
    false_ends: list[str] = []
    delays: list[float] = []
    incomplete = 0
    for name, case_pauses in by_case.items():
        category = case_pauses[0].category
        incomplete += category == "incomplete"
        for pause in case_pauses:
            ends_after = decision_ms(pause, policy)
            if pause.where == "inside":
                if pause.silence_ms is not None and ends_after < pause.silence_ms:
                    false_ends.append(name)
                    break
                continue
            if category == "complete":
                delays.append(ends_after)
            break
    complete = sum(1 for c in by_case.values() if c[0].category == "complete")
    return {
        **asdict(policy),
        "incomplete_cases": incomplete,
        "false_end_of_turn": len(false_ends),
        "false_end_of_turn_pct": round(100 * len(false_ends) / max(incomplete, 1), 1),
        "complete_cases": complete,
        "delay_p50_ms": round(float(np.percentile(delays, 50)), 1) if delays else None,
        "delay_p90_ms": round(float(np.percentile(delays, 90)), 1) if delays else None,
        "delay_at_ceiling": sum(1 for d in delays if d >= policy.max_ms),
        "false_cases": false_ends,
    }


def policies(base: ConversationConfig) -> list[Policy]:
    grid = itertools.product((0.3, 0.4, 0.5), (0.0, 0.03, 0.05, 0.1), (400, 500, 700))
    return [Policy(t, s, w, base.endpoint_max_ms, base.endpoint_unsure_ms) for t, s, w in grid]


def replays(
    pauses: Sequence[Pause], settings: Sequence[int], base: ConversationConfig
) -> list[dict[str, Any]]:
    return [
        {"pause_ms": pause_ms, **replay([p for p in pauses if p.pause_ms == pause_ms], policy)}
        for pause_ms in settings
        for policy in policies(base)
    ]


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        "# The endpoint's inputs at every pause, and the policy replayed",
        "",
        f"- date: {meta['date']}; command: `{meta['command']}`",
        f"- machine: {meta['machine']}",
        f"- {meta['cases']} complete and {meta['cases']} incomplete utterances (the turns "
        "corpus, seed 0), no Opus; Smart Turn v3.2, Whisper base int8 (the `small` set)",
        "",
        "## Smart Turn's probability at the pauses",
        "",
        "| VAD pause | where | n | p10 | p50 | p90 | model ms p50 | pause found after (ms) p50 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["probabilities"]:
        lines.append(
            f"| {row['pause_ms']} | {row['where']} | {row['n']} | {row['p10']} | {row['p50']} "
            f"| {row['p90']} | {row['turn_ms_p50']} | {row['detected_ms_p50']} |"
        )
    lines += [
        "",
        "## The policy replayed (false end of turn on incomplete, delay on complete)",
        "",
        "| VAD pause | threshold | sure incomplete below | words wait | unsure wait "
        "| false end of turn | delay p50 / p90 ms | at the ceiling |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["replays"]:
        lines.append(
            f"| {row['pause_ms']} | {row['threshold']} | {row['sure_incomplete']} "
            f"| {row['words_ms']} | {row['unsure_ms']} "
            f"| {row['false_end_of_turn']}/{row['incomplete_cases']} "
            f"({row['false_end_of_turn_pct']}%) | {row['delay_p50_ms']} / {row['delay_p90_ms']} "
            f"| {row['delay_at_ceiling']}/{row['complete_cases']} |"
        )
    return "\n".join(lines) + "\n"


def summarise(pauses: list[Pause], pause_settings: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for pause_ms, where in itertools.product(pause_settings, ("inside", "end")):
        chosen = [p for p in pauses if p.pause_ms == pause_ms and p.where == where]
        if not chosen:
            continue
        probs = [p.probability for p in chosen]
        rows.append(
            {
                "pause_ms": pause_ms,
                "where": where,
                "n": len(chosen),
                **{f"p{q}": round(float(np.percentile(probs, q)), 3) for q in (10, 50, 90)},
                "turn_ms_p50": round(float(np.median([p.turn_ms for p in chosen])), 1),
                "detected_ms_p50": round(float(np.median([p.detected_ms for p in chosen])), 1),
            }
        )
    return rows


async def study(args: argparse.Namespace) -> dict[str, Any]:
    base = ConversationConfig()
    speaking = await asyncio.to_thread(voices, args.models, args.profile)
    cases = await asyncio.to_thread(
        build_corpus, speaking, args.cases, args.seed, ("complete", "incomplete")
    )
    config = AppConfig(
        models=ModelConfig(models_dir=args.models, profile=args.profile, offline=True),
        conversation=base,
    )
    runtime = await Runtime.load(config)
    if runtime.turn_model is None:
        raise SystemExit(f"no Smart Turn model in {args.models}: voice-agent models pull")
    pauses: list[Pause] = []
    try:
        for pause_ms in args.pause_ms:
            conversation = replace(base, pause_ms=pause_ms)
            for index, case in enumerate(cases, 1):
                found = await asyncio.to_thread(pauses_of, case, runtime, conversation)
                pauses.extend(found)
                print(f"[{pause_ms} ms {index}/{len(cases)}] {case.name}: "
                      + ", ".join(f"{p.where} p={p.probability:.2f}" for p in found),
                      file=sys.stderr)  # fmt: skip
    finally:
        await runtime.aclose()
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": "python -m benchmarks.turns.pauses " + " ".join(sys.argv[1:]),
            "machine": machine.one_line(machine.describe()),
            "cases": args.cases,
        },
        "probabilities": summarise(pauses, args.pause_ms),
        "replays": replays(pauses, args.pause_ms, base),
        "pauses": [asdict(p) for p in pauses],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.turns.pauses")
    parser.add_argument("--models", type=Path, default=Path(".cache/models"))
    parser.add_argument("--profile", default="small")
    parser.add_argument("--cases", type=int, default=60, help="per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause-ms", type=int, nargs="+", default=[96, 128, 160])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/turns/pauses"))
    parser.add_argument(
        "--replay",
        action="store_true",
        help="replay the policy grid on the pauses in OUT/results.json (no models run)",
    )
    args = parser.parse_args(argv)
    if args.replay:
        result = json.loads((args.out / "results.json").read_text())
        pauses = [Pause(**p) for p in result["pauses"]]
        settings = sorted({p.pause_ms for p in pauses})
        result["replays"] = replays(pauses, settings, ConversationConfig())
    else:
        result = asyncio.run(study(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "summary.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
