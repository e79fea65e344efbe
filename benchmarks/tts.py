"""Piper against MMS-TTS on this machine: time to first audio and real-time factor.

Each voice gets the chunks a reply is cut into (a first clause, then whole sentences), one
at a time, as the TTS worker gets them. Time to first audio is the synthesis time of a
reply's first chunk (both engines return a chunk's audio at once); the real-time factor is
compute time over audio time for every chunk. Run on synthetic models of the real
architectures (Piper medium, MMS-TTS eng) they cost what the real voices cost:

    voice-agent models synth --profile cpu --tts piper --out /tmp/synth-cpu
    voice-agent models synth --profile cpu --tts mms --out /tmp/synth-cpu
    python -m benchmarks.tts --models /tmp/synth-cpu --repeats 5 --out benchmarks/results/tts
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.app.runtime import load_synthesizer
from agent.config.env import apply_environment
from agent.languages import ENGLISH
from agent.models.device import detect_device
from agent.models.entries import TtsEngine
from agent.models.registry import entry_for, get_profile
from agent.models.resolve import ResolvedModels
from agent.models.synth import entry_path
from agent.stages.chunker import SpeechChunker
from agent.stages.tts import Synthesizer
from benchmarks.harness import write_results
from benchmarks.machine import describe, one_line
from benchmarks.report import stats

REPLIES = (
    "Sure, the weather in Paris is mild today, with a light breeze from the west.",
    "Well, that depends on what you mean. Most people start with the basics and go from there.",
    "Yes. It opens at nine in the morning and closes at six in the evening.",
    "I think so, although I would check the timetable before you leave the house.",
    "Of course. Take the second street on the left, then walk straight for about ten minutes.",
    "Hmm, a good question. Water boils at a lower temperature high in the mountains.",
    "No, not really. The museum is closed on Mondays, but it is open late on Fridays.",
    "Right, so the first step is to preheat the oven. Then mix the flour and the butter.",
)


def reply_chunks(text: str) -> list[str]:
    chunker = SpeechChunker()
    return [*chunker.push(text), *chunker.flush()]


def ratio_stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "max": None}
    p50, p90 = np.percentile(values, [50, 90])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "max": round(max(values), 4)}


def time_voice(tts: Synthesizer, repeats: int) -> dict[str, Any]:
    tts.synthesize("Warming up the voice.")
    first_chunk_ms: list[float] = []
    chunk_ms: list[float] = []
    rtf: list[float] = []
    audio_s = compute_s = 0.0
    for _ in range(repeats):
        for reply in REPLIES:
            for index, chunk in enumerate(reply_chunks(reply)):
                started = time.perf_counter()
                pcm = tts.synthesize(chunk)
                elapsed = time.perf_counter() - started
                seconds = pcm.size / tts.sample_rate
                if index == 0:
                    first_chunk_ms.append(elapsed * 1000)
                chunk_ms.append(elapsed * 1000)
                if seconds > 0:
                    rtf.append(elapsed / seconds)
                audio_s += seconds
                compute_s += elapsed
    return {
        "sample_rate": tts.sample_rate,
        "time_to_first_audio_ms": stats(first_chunk_ms),
        "chunk_ms": stats(chunk_ms),
        "real_time_factor": ratio_stats(rtf),
        "overall_real_time_factor": round(compute_s / audio_s, 4) if audio_s else None,
        "audio_s": round(audio_s, 1),
    }


ENGINES: tuple[TtsEngine, ...] = ("piper", "mms")


def measure(models: Path, repeats: int) -> dict[str, Any]:
    device = detect_device("cpu")
    results: dict[str, Any] = {}
    for engine in ENGINES:
        path = entry_path(models, entry_for(get_profile("cpu"), "voice", ENGLISH, engine))
        resolved = ResolvedModels("cpu", stt=path, llm=path, voice=path, tts=engine)
        started = time.perf_counter()
        tts = load_synthesizer(resolved, device)
        load_s = round(time.perf_counter() - started, 2)
        results[engine] = {"path": str(path), "load_s": load_s, **time_voice(tts, repeats)}
    return {"repeats": repeats, "voices": results}


def markdown(result: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    lines = [
        "# Piper against MMS-TTS",
        "",
        f"Machine: {one_line(machine)}; voices on the CPU; load average at start "
        f"{machine.get('load_average')} (other work on the machine slows both voices alike).",
        f"Command: `{command}`.",
        "",
        "**Synthetic models** (random weights) of the real architectures: Piper "
        "`en_US-lessac-medium` (VITS, 22.05 kHz, ONNX on onnxruntime) and MMS-TTS "
        "`facebook/mms-tts-eng` (VITS, 16 kHz, PyTorch through transformers). Compute per "
        "chunk is the real voices'; how long each chunk sounds is not (a random duration "
        "predictor), so the real-time factor is compute over the audio these models made.",
        "",
        "| voice | load | first audio p50 | p90 | max | per chunk p50 | RTF p50 | RTF p90 "
        "| RTF overall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, r in result["voices"].items():
        ttfa, chunk, rtf = r["time_to_first_audio_ms"], r["chunk_ms"], r["real_time_factor"]
        lines.append(
            f"| {engine} | {r['load_s']} s | {ttfa['p50']} ms | {ttfa['p90']} ms "
            f"| {ttfa['max']} ms | {chunk['p50']} ms | {rtf['p50']:.3f} | {rtf['p90']:.3f} "
            f"| {r['overall_real_time_factor']} |"
        )
    n = result["voices"]["piper"]["time_to_first_audio_ms"]["n"]
    lines += [
        "",
        f"{n} replies per voice ({len(REPLIES)} texts x {result['repeats']} passes), cut by "
        "the agent's chunker; first audio is the synthesis time of each reply's first chunk.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="synthetic cpu set")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tts"))
    apply_environment(parser)
    args = parser.parse_args()
    result = measure(args.models, args.repeats)
    machine = describe()
    command = f"python -m benchmarks.tts --models DIR --repeats {args.repeats}"
    write_results(args.out, {"machine": machine, **result}, markdown(result, machine, command))


if __name__ == "__main__":
    main()
