"""Speech recognition on the utterance's own window against faster-whisper's full 30 s
window: word error rate and per-call time on a corpus of known sentences.

The corpus (`benchmarks.stt_corpus`) is spoken by espeak-ng voices and by a real Piper voice;
each clip is transcribed by two `Transcriber`s sharing one Whisper model, one on the full
window (the reference), one on the cut window with its guard, alternately, one call at a
time. Real models (their quality is what is measured):

    python -m benchmarks.stt --whisper /tmp/small-models/whisper-base \\
        --voice /tmp/small-models/piper-en_US-joe-medium/en_US-joe-medium.onnx
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent.config.env import apply_environment
from agent.languages import ENGLISH
from agent.models.device import detect_device
from agent.models.loaders import load_piper, load_whisper
from agent.stages.stt import Transcriber, Transcript
from agent.stages.stt_guard import WindowGuard
from agent.stages.tts.piper import PiperSynthesizer
from benchmarks.harness import write_results
from benchmarks.machine import describe, one_line
from benchmarks.report import stats
from benchmarks.stt_corpus import Clip, espeak_clips, voice_clips
from benchmarks.wer import word_errors

MODES = ("full", "cut")
SHORT_S = 1.5
LONG_S = 6.0


def length_class(clip: Clip) -> str:
    if clip.duration_s < SHORT_S:
        return "short"
    return "long" if clip.duration_s >= LONG_S else "medium"


def corpus(voice: Path | None, device: str) -> list[Clip]:
    clips = espeak_clips()
    if voice is not None:
        tts = PiperSynthesizer(load_piper(voice, detect_device(device)))
        clips += voice_clips(tts, voice.name.removesuffix(".onnx"))
    return clips


def transcribe_all(
    transcribers: dict[str, Transcriber], clips: list[Clip], repeats: int
) -> dict[str, list[list[Transcript]]]:
    """Per mode, per repeat, one transcript per clip. The modes alternate clip by clip (and
    which goes first alternates too), so a busy moment on the machine hits both."""
    runs: dict[str, list[list[Transcript]]] = {mode: [] for mode in transcribers}
    for repeat in range(repeats):
        for mode in transcribers:
            runs[mode].append([])
        for index, clip in enumerate(clips):
            order = list(transcribers) if (index + repeat) % 2 == 0 else list(transcribers)[::-1]
            for mode in order:
                runs[mode][repeat].append(transcribers[mode].transcribe_blocking(clip.audio))
    return runs


def scores(clips: list[Clip], transcripts: list[Transcript]) -> dict[str, Any]:
    groups: dict[str, list[int]] = {"all": list(range(len(clips)))}
    for index, clip in enumerate(clips):
        groups.setdefault(length_class(clip), []).append(index)
        groups.setdefault(clip.speaker.split(":")[0], []).append(index)
    out: dict[str, Any] = {}
    for name, members in groups.items():
        references = [clips[i].text for i in members]
        errors = word_errors(references, [transcripts[i].text for i in members])
        out[name] = {
            "clips": len(members),
            "wer": round(errors.wer, 4),
            "reference_words": errors.reference_words,
            "errors": errors.substitutions + errors.deletions + errors.insertions,
            "ms": stats(transcripts[i].decode_ms for i in members),
        }
    return out


def measure(
    whisper: Path, voice: Path | None, device: str, repeats: int, guard: WindowGuard
) -> dict[str, Any]:
    info = detect_device(device)
    model = load_whisper(whisper, info)
    clips = corpus(voice, device)
    with ThreadPoolExecutor(1) as executor:
        transcribers = {
            "full": Transcriber(model, ENGLISH.whisper, executor, cut_window=False),
            "cut": Transcriber(model, ENGLISH.whisper, executor, guard=guard),
        }
        for transcriber in transcribers.values():
            transcriber.transcribe_blocking(clips[0].audio)  # warm up
        started = time.perf_counter()
        runs = transcribe_all(transcribers, clips, repeats)
        elapsed = time.perf_counter() - started
    first = {mode: runs[mode][0] for mode in MODES}
    every = {mode: [t for run in runs[mode] for t in run] for mode in MODES}
    cut_calls = every["cut"]
    fallbacks = [t for t in cut_calls if t.fell_back]
    per_mode = {}
    for mode in MODES:
        per_mode[mode] = {
            "ms": stats(t.decode_ms for t in every[mode]),
            "window_s": stats(t.window_s for t in every[mode]),
            "scores": scores(clips, first[mode]),
        }
    return {
        "whisper": str(whisper),
        "voice": str(voice) if voice else None,
        "device": info.description,
        "guard": asdict(guard),
        "repeats": repeats,
        "clips": len(clips),
        "seconds": round(elapsed, 1),
        "modes": per_mode,
        "fallbacks": {
            "count": len(fallbacks),
            "calls": len(cut_calls),
            "rate": round(len(fallbacks) / len(cut_calls), 4) if cut_calls else None,
            "reasons": sorted({str(t.fallback) for t in fallbacks}),
        },
        "per_clip": [
            {
                "name": clip.name,
                "speaker": clip.speaker,
                "audio_s": round(clip.duration_s, 2),
                "reference": clip.text,
                **{
                    f"{mode}_{key}": value
                    for mode in MODES
                    for key, value in (
                        ("text", first[mode][index].text),
                        ("ms", [round(run[index].decode_ms or 0.0, 1) for run in runs[mode]]),
                        ("window_s", first[mode][index].window_s),
                    )
                },
                "cut_fallback": first["cut"][index].fallback,
            }
            for index, clip in enumerate(clips)
        ],
    }


def differences(per_clip: list[dict[str, Any]]) -> str:
    """Where the two windows' transcripts differ in errors, and the worst cut-window ones."""
    worse, better = [], 0
    for clip in per_clip:
        full = word_errors([clip["reference"]], [clip["full_text"]])
        cut = word_errors([clip["reference"]], [clip["cut_text"]])
        delta = (cut.substitutions + cut.deletions + cut.insertions) - (
            full.substitutions + full.deletions + full.insertions
        )
        if delta > 0:
            worse.append((delta, clip))
        better += delta < 0
    worse.sort(key=lambda item: -item[0])
    examples = "; ".join(f"{clip['full_text']!r} -> {clip['cut_text']!r}" for _, clip in worse[:3])
    return f"Clips with fewer errors on the cut window: {better}; with more: {len(worse)}" + (
        f" (most: {examples})." if worse else "."
    )


def markdown(result: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    full, cut = result["modes"]["full"], result["modes"]["cut"]
    fallbacks = result["fallbacks"]
    guard = result["guard"]
    voice = Path(result["voice"]).name if result["voice"] else "none"
    lines = [
        "# Speech recognition: the utterance's own window against the full 30 s window",
        "",
        f"Machine: {one_line(machine)}; device: {result['device']}; load average at start "
        f"{machine.get('load_average')} (a shared machine: other work slows both modes alike, "
        "they alternate clip by clip).",
        f"Command: `{command}`.",
        "",
        f"Real models: Whisper `{Path(result['whisper']).name}`, greedy, English; "
        f"{result['clips']} clips (espeak-ng voices and Piper `{voice}`),"
        f" each transcribed {result['repeats']} time(s) per mode, modes alternating. "
        f"Cut window: the audio plus {guard['trailing_pad_s']} s, at least "
        f"{guard['min_window_s']} s; token limit {guard['tokens_base']} + "
        f"{guard['tokens_per_second']} per second of audio.",
        "",
        "| | full window | cut window |",
        "|---|---|---|",
        f"| WER, all clips | {full['scores']['all']['wer']:.2%} "
        f"| {cut['scores']['all']['wer']:.2%} |",
    ]
    for group in ("short", "medium", "long", "espeak", "piper"):
        if group in full["scores"]:
            f, c = full["scores"][group], cut["scores"][group]
            lines.append(
                f"| WER, {group} ({f['clips']} clips, {f['reference_words']} words) "
                f"| {f['wer']:.2%} | {c['wer']:.2%} |"
            )
    lines += [
        f"| per call p50 | {full['ms']['p50']} ms | {cut['ms']['p50']} ms |",
        f"| per call p90 | {full['ms']['p90']} ms | {cut['ms']['p90']} ms |",
        f"| per call max | {full['ms']['max']} ms | {cut['ms']['max']} ms |",
    ]
    for group in ("short", "medium", "long"):
        if group in full["scores"]:
            f, c = full["scores"][group]["ms"], cut["scores"][group]["ms"]
            lines.append(f"| per call p50, {group} | {f['p50']} ms | {c['p50']} ms |")
    lines += [
        f"| window p50 | {full['window_s']['p50']} s | {cut['window_s']['p50']} s |",
        "",
        differences(result["per_clip"]),
        "",
        f"The guard fell back to the full window on {fallbacks['count']} of "
        f"{fallbacks['calls']} cut-window calls"
        + (f" ({'; '.join(fallbacks['reasons'])})." if fallbacks["reasons"] else "."),
        "WER is over the first pass (greedy decoding; CTranslate2 on several threads may "
        "still flip a word between runs); case and punctuation aside (`benchmarks.wer`). "
        "Per-call time is the transcription's compute, both decodes when the guard fell back; "
        "short < 1.5 s of audio, long >= 6 s.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--whisper", type=Path, required=True, help="CTranslate2 Whisper dir")
    parser.add_argument("--voice", type=Path, help="a Piper voice (.onnx) to speak the corpus")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--min-window",
        type=float,
        default=WindowGuard.min_window_s,
        help="the cut window's shortest length, seconds (the guard's default)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stt"))
    apply_environment(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    machine = describe()
    guard = WindowGuard(min_window_s=args.min_window)
    result = measure(args.whisper, args.voice, args.device, args.repeats, guard)
    command = (
        f"python -m benchmarks.stt --whisper {args.whisper} --voice {args.voice} "
        f"--device {args.device} --repeats {args.repeats} --min-window {args.min_window}"
    )
    write_results(args.out, {"machine": machine, **result}, markdown(result, machine, command))


if __name__ == "__main__":
    main()
