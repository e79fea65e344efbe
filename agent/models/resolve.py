"""From settings to model paths: profile choice, path overrides, offline errors, first-start
download."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import ModelConfig
from agent.languages import ENGLISH, Language
from agent.models import ModelError
from agent.models.device import DeviceInfo, auto_profile
from agent.models.entries import KINDS, Kind, ModelEntry, TtsEngine
from agent.models.loaders import is_synthetic
from agent.models.pull import (
    is_present,
    pull_command,
    pull_entries,
    read_manifest,
    synth_command,
)
from agent.models.registry import entry_for, get_profile, tts_engine
from agent.models.synth import entry_path

logger = logging.getLogger(__name__)

_FLAGS: dict[Kind, str] = {"stt": "--stt", "llm": "--llm", "voice": "--voice"}


@dataclass(frozen=True)
class ResolvedModels:
    profile: str
    stt: Path
    """faster-whisper (CTranslate2) model directory."""
    llm: Path | None
    """GGUF file; None when an inference server runs the language model (`--llm-url`)."""
    voice: Path
    """Piper `.onnx` (its `.onnx.json` beside it), or an MMS-TTS model directory."""
    tts: TtsEngine = "piper"

    def path(self, kind: Kind) -> Path | None:
        value: Path | None = getattr(self, kind)
        return value

    def synthetic_kinds(self) -> list[str]:
        return [kind for kind in KINDS if (path := self.path(kind)) and is_synthetic(path)]


def is_usable(entry: ModelEntry, models_dir: Path) -> bool:
    """Downloaded in full, or written by `models synth`."""
    if is_present(entry, models_dir):
        return True
    return (
        bool(read_manifest(entry, models_dir).get("synthetic"))
        and entry_path(models_dir, entry).exists()
    )


def resolve_models(config: ModelConfig, language: Language = ENGLISH) -> ResolvedModels:
    """Paths of the three models for the conversation's language, fetching the profile's
    missing ones unless offline.

    Raises ModelError with a message for the user (what is missing, the command to run).
    """
    if config.profile is None:
        profile_name = "cpu" if config.device == "cpu" else auto_profile()
        logger.info("model profile: %s (auto; --profile overrides)", profile_name)
    else:
        profile_name = config.profile
    try:
        profile = get_profile(profile_name)
    except ValueError as exc:
        raise ModelError(str(exc)) from exc
    models_dir = Path(config.models_dir).expanduser()
    engine = tts_engine(config.tts, language, config.voice)

    paths: dict[Kind, Path | None] = {}
    missing: list[ModelEntry] = []
    for kind in KINDS:
        if kind == "llm" and config.llm_url is not None:
            paths[kind] = None  # the server at --llm-url has its own
            continue
        override: Path | None = getattr(config, kind)
        if override is not None:
            path = Path(override).expanduser()
            if not path.exists():
                raise ModelError(f"{_FLAGS[kind]} {path}: not found")
            paths[kind] = path
            continue
        try:
            entry = entry_for(profile, kind, language, engine)
        except ValueError as exc:
            raise ModelError(str(exc)) from exc
        paths[kind] = entry_path(models_dir, entry)
        if not is_usable(entry, models_dir):
            missing.append(entry)

    if missing:
        names = "\n".join(f"  - {e.kind}: {e.title} ({e.name})" for e in missing)
        if profile.synthetic_only:
            raise ModelError(
                f"profile {profile.name!r} exists only as synthetic models, and {models_dir} "
                f"lacks:\n{names}\nBuild them with: "
                f"{synth_command(profile.name, models_dir, engine)}"
            )
        if config.offline:
            raise ModelError(
                f"--offline and models of profile {profile.name!r} are missing in "
                f"{models_dir}:\n{names}\nFetch them with: "
                f"{pull_command(profile.name, models_dir, engine, language)}\n"
                f"(or give paths with --stt/--llm/--voice, or build synthetic ones with "
                f"{synth_command(profile.name, models_dir)})"
            )
        logger.info(
            "first start: fetching %d model(s) of profile %s into %s",
            len(missing),
            profile.name,
            models_dir,
        )
        pull_entries(missing, models_dir, profile.name)

    stt, voice = paths["stt"], paths["voice"]
    assert stt is not None and voice is not None
    resolved = ResolvedModels(
        profile=profile.name, stt=stt, llm=paths["llm"], voice=voice, tts=engine
    )
    for synthetic in resolved.synthetic_kinds():
        logger.warning(
            "%s model %s is SYNTHETIC (random weights): replies are gibberish, timings are real",
            synthetic,
            getattr(resolved, synthetic),
        )
    return resolved


def models_health(resolved: ResolvedModels, device: DeviceInfo) -> dict[str, Any]:
    """What /health reports about the models."""
    synthetic = resolved.synthetic_kinds()
    report: dict[str, Any] = {
        "profile": resolved.profile,
        "device": device.as_dict(),
        "stt": {"path": str(resolved.stt), "synthetic": "stt" in synthetic},
        "llm": {"path": str(resolved.llm), "synthetic": "llm" in synthetic}
        if resolved.llm is not None
        else {},
        "voice": {
            "path": str(resolved.voice),
            "engine": resolved.tts,
            "synthetic": "voice" in synthetic,
        },
        "synthetic": bool(synthetic),
    }
    if synthetic:
        report["warning"] = (
            f"serving synthetic models ({', '.join(synthetic)}): random weights, "
            "meaningless output, real timings"
        )
    return report
