"""Would a transcript made while the user speaks save Whisper's decoding at the pause?

The idea (whisper_streaming's agreed prefix, made lossless): transcribe the utterance while
it is spoken; at the pause, check that draft against the whole audio in one forced pass
(CTranslate2's `align`: each draft token's probability), keep the draft's tokens while
Whisper is sure of them (p > 0.6: a token over 0.5 is the greedy choice), and generate only
the rest with those tokens as the decoding prefix. The result is the greedy transcript, so
the question is only the time. Per clip: the plain greedy decode on the cut window, and the
draft-checked one, with a draft made on the audio less its last `--draft-lag` seconds (a
partial transcript about that far behind the speech). Real models:

    python -m benchmarks.stt_prefix --whisper .cache/models/whisper-base
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio import STT_RATE, int16_to_float
from agent.config.env import apply_environment
from agent.models.device import detect_device
from agent.models.loaders import load_whisper
from agent.stages.stt_guard import WindowGuard
from agent.stages.whisper_window import WhisperWindow
from benchmarks.harness import write_results
from benchmarks.machine import describe, one_line
from benchmarks.stt_corpus import espeak_clips

SURE = 0.6


def _generate(window: WhisperWindow, encoded: Any, prefix: list[int], limit: int) -> list[int]:
    """Greedy text tokens, `prefix` included (CTranslate2 returns it with them)."""
    eot = window._prompt("en")[2].eot
    result = window.generate(encoded, "en", limit, prefix)
    return [t for t in result.sequences_ids[0] if t < eot]


def measure_clip(
    window: WhisperWindow, guard: WindowGuard, audio: np.ndarray, lag_s: float
) -> dict[str, Any]:
    prompt, _, _ = window._prompt("en")
    frames = guard.window_frames(window.content_frames(audio.size))
    assert frames is not None
    limit = guard.token_limit(audio.size / STT_RATE)
    part = audio[: max(0, audio.size - round(lag_s * STT_RATE))]
    part_frames = guard.window_frames(window.content_frames(part.size))
    assert part_frames is not None
    draft = _generate(window, window._encode(part, part_frames)[0], [], limit)

    started = time.perf_counter()
    encoded, _ = window._encode(audio, frames)
    encoded_at = time.perf_counter()
    plain = _generate(window, encoded, [], limit)
    plain_done = time.perf_counter()

    started_checked = time.perf_counter()
    encoded, content = window._encode(audio, frames)
    checked_encoded_at = time.perf_counter()
    kept: list[int] = []
    if draft:
        aligned = window._ct2.align(encoded, prompt, [draft], content)[0]
        for token, probability in zip(draft, aligned.text_token_probs, strict=True):
            if probability <= SURE:
                break
            kept.append(token)
    checked_at = time.perf_counter()
    checked = _generate(window, encoded, kept, limit)
    checked_done = time.perf_counter()
    return {
        "audio_s": round(audio.size / STT_RATE, 2),
        "tokens": len(plain),
        "draft_tokens": len(draft),
        "kept_tokens": len(kept),
        "same_text": plain == checked,
        "encode_ms": round((encoded_at - started) * 1000, 1),
        "plain_decode_ms": round((plain_done - encoded_at) * 1000, 1),
        "plain_ms": round((plain_done - started) * 1000, 1),
        "check_ms": round((checked_at - checked_encoded_at) * 1000, 1),
        "checked_decode_ms": round((checked_done - checked_at) * 1000, 1),
        "checked_ms": round((checked_done - started_checked) * 1000, 1),
    }


def markdown(result: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    clips = result["clips"]
    load = machine.get("load_average")
    model = Path(result["whisper"]).name

    def p50(key: str) -> float:
        return round(float(statistics.median(c[key] for c in clips)), 1)

    kept = sum(c["kept_tokens"] for c in clips)
    total = sum(c["tokens"] for c in clips)
    return (
        "\n".join(
            [
                "# Speech recognition: decoding past a draft made while the user speaks",
                "",
                f"Machine: {one_line(machine)}; load average at start {load}.",
                f"Command: `{command}`.",
                "",
                f"Real model: Whisper `{model}` int8, greedy, English, on the cut window; "
                f"{len(clips)} espeak-ng clips of 1.5 s or more; drafts on the audio less its "
                f"last {result['draft_lag_s']} s; draft tokens kept while p > {SURE}.",
                "",
                "| per clip, p50 (ms) | plain greedy | draft checked |",
                "|---|---:|---:|",
                f"| encoder (same window) | {p50('encode_ms')} | {p50('encode_ms')} |",
                f"| check of the draft (one forced pass) | | {p50('check_ms')} |",
                f"| decoding | {p50('plain_decode_ms')} | {p50('checked_decode_ms')} |",
                f"| whole call | {p50('plain_ms')} | {p50('checked_ms')} |",
                "",
                f"Same text on {sum(c['same_text'] for c in clips)} of {len(clips)} clips; "
                f"{kept} of {total} tokens came from the drafts. "
                + verdict(p50("plain_ms"), p50("checked_ms")),
            ]
        )
        + "\n"
    )


def verdict(plain_ms: float, checked_ms: float) -> str:
    if checked_ms < plain_ms * 0.9:
        return f"The draft saves {plain_ms - checked_ms:.0f} ms per call at the median."
    return (
        "The draft saves nothing: CTranslate2's Whisper decodes the prompt's tokens after "
        "the task ones (the decoding prefix) one step per token, as it does generated ones, "
        "so a kept token costs what a generated one does, and the check comes on top."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--whisper", type=Path, required=True, help="CTranslate2 Whisper dir")
    parser.add_argument("--draft-lag", type=float, default=0.8, help="seconds a draft is behind")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stt/prefix"))
    apply_environment(parser)
    args = parser.parse_args()
    machine = describe()
    window = WhisperWindow(load_whisper(args.whisper, detect_device("cpu")))
    guard = WindowGuard()
    clips = [c for c in espeak_clips() if c.duration_s >= 1.5]
    measure_clip(window, guard, int16_to_float(clips[0].audio), args.draft_lag)  # warm up
    rows = [measure_clip(window, guard, int16_to_float(c.audio), args.draft_lag) for c in clips]
    result = {"whisper": str(args.whisper), "draft_lag_s": args.draft_lag, "clips": rows}
    command = f"python -m benchmarks.stt_prefix --whisper {args.whisper}"
    write_results(args.out, {"machine": machine, **result}, markdown(result, machine, command))


if __name__ == "__main__":
    main()
