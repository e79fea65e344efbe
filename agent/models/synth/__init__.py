"""Synthetic models: random weights (fixed seed) in exactly the formats the loaders read.

`synthesize(profile, out_dir)` lays the files out as `voice-agent models pull` does, so
`voice-agent serve --models OUT --profile P --offline` runs on them. `tiny` builds in about
a second and weighs a few MB (the tests use it); `cpu` and `gpu` have the real defaults'
shapes, vocabularies and quantization, so they cost the real models' compute time (the
Piper voice of those needs torch). Every file says it is synthetic in its metadata.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path

from agent.languages import ENGLISH, Language
from agent.models.entries import (
    LlamaShape,
    MmsShape,
    ModelEntry,
    PiperShape,
    TtsEngine,
    WhisperShape,
)
from agent.models.registry import entry_for, get_profile, tts_engine

logger = logging.getLogger(__name__)

MANIFEST = ".voice-agent.json"
SYNTH_VERSION = 1
_SEEDS = {"stt": 1001, "llm": 2002, "voice": 3003}


def entry_path(models_dir: Path, entry: ModelEntry) -> Path:
    """What the loader opens for an entry: the directory itself, or its main file."""
    base = models_dir / entry.name
    return base / entry.main if entry.main else base


def _is_current(models_dir: Path, entry: ModelEntry) -> bool:
    manifest = models_dir / entry.name / MANIFEST
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        bool(data.get("synthetic"))
        and data.get("synth_version") == SYNTH_VERSION
        and entry_path(models_dir, entry).exists()
    )


def synthesize_entry(entry: ModelEntry, models_dir: Path, *, force: bool = False) -> Path:
    """Write one synthetic model (skipped when an identical one is already there)."""
    target = entry_path(models_dir, entry)
    if not force and _is_current(models_dir, entry):
        logger.info("synthetic %s already in %s", entry.name, models_dir)
        return target
    started = time.perf_counter()
    seed = _SEEDS[entry.kind]
    title = f"{entry.title} [{entry.name}]"
    shape = entry.shape
    if isinstance(shape, WhisperShape):
        from agent.models.synth.whisper_ct2 import write_whisper

        write_whisper(target, shape, seed=seed, title=title)
    elif isinstance(shape, LlamaShape):
        from agent.models.synth.gguf_llama import write_llama

        write_llama(target, shape, seed=seed, title=title)
    elif isinstance(shape, PiperShape):
        from agent.models.synth.piper_voice import write_tiny_voice, write_vits_voice

        if shape.quality == "tiny":
            write_tiny_voice(target, shape, seed=seed, title=title)
        else:
            write_vits_voice(target, shape, seed=seed, title=title)
    elif isinstance(shape, MmsShape):
        from agent.models.synth.mms_voice import write_mms_voice

        iso3 = entry.name.removeprefix("mms-tts-") if entry.repo else "eng"
        write_mms_voice(target, shape, seed=seed, title=title, iso3=iso3)
    else:  # pragma: no cover - the registry only has these four
        raise TypeError(f"no synthesizer for {type(shape).__name__}")
    elapsed = time.perf_counter() - started
    manifest = {
        "name": entry.name,
        "kind": entry.kind,
        "synthetic": True,
        "synth_version": SYNTH_VERSION,
        "seed": seed,
        "imitates": entry.repo,
        "build_s": round(elapsed, 2),
    }
    (models_dir / entry.name / MANIFEST).write_text(
        json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
    )
    logger.info("synthetic %s written in %.1f s: %s", entry.name, elapsed, target)
    return target


def _check_requirements(entries: list[ModelEntry]) -> None:
    """Fail before writing anything when a package the set needs is missing."""
    needed: dict[str, str] = {}
    for entry in entries:
        shape = entry.shape
        if isinstance(shape, LlamaShape):
            needed["gguf"] = "gguf"
            if shape.quantization.upper() not in ("F32", "F16"):
                needed["llama_cpp"] = "llama-cpp-python"
        elif isinstance(shape, WhisperShape):
            needed["ctranslate2"] = "ctranslate2"
            needed["tokenizers"] = "tokenizers"
        elif isinstance(shape, PiperShape):
            needed["onnx"] = "onnx"
            if shape.quality != "tiny":
                needed["torch"] = "torch (a CPU build is enough)"
        elif isinstance(shape, MmsShape):
            needed["torch"] = "torch==2.13.0"
            needed["transformers"] = '"voice-agent[mms]"'

    missing = [pip for module, pip in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise RuntimeError("synthetic models need more packages: pip install " + ", ".join(missing))


def mms_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def voices_to_write(profile: str, language: Language, tts: str) -> list[TtsEngine]:
    """`auto`: both voices for tiny (MMS only when its extra is installed), else the
    language's default engine."""
    if tts in ("piper", "mms"):
        return ["piper" if tts == "piper" else "mms"]
    prof = get_profile(profile)
    if prof.synthetic_only and language.is_english:
        if mms_available():
            return ["piper", "mms"]
        logger.warning(
            "skipping the tiny MMS-TTS voice: it needs torch and transformers "
            '(pip install torch==2.13.0 "voice-agent[mms]")'
        )
        return ["piper"]
    return [tts_engine("auto", language)]


def synthesize(
    profile: str,
    out_dir: Path,
    *,
    force: bool = False,
    language: Language = ENGLISH,
    tts: str = "auto",
) -> Path:
    """Write the profile's synthetic set for a language under `out_dir` (pull's layout);
    returns `out_dir`. The voices written are `voices_to_write(profile, language, tts)`.

    Deterministic: the same profile always gives the same weights.
    """
    prof = get_profile(profile)
    out_dir = Path(out_dir)
    engines = voices_to_write(profile, language, tts)
    try:
        entries = [entry_for(prof, "stt", language, engines[0]), prof.llm]
        entries += [entry_for(prof, "voice", language, engine) for engine in engines]
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    _check_requirements([e for e in entries if force or not _is_current(out_dir, e)])
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        synthesize_entry(entry, out_dir, force=force)
    return out_dir


__all__ = ["MANIFEST", "entry_path", "synthesize", "synthesize_entry", "voices_to_write"]
