"""Which end-of-turn model the agent gets, if any, and what /health says about it.

The Smart Turn model is optional: without it the agent ends a user's turn on silence alone.
So a missing one never stops the server. With `--offline` (or a profile without one) it
stays missing; otherwise it is fetched from the package index, and a failed fetch is a
warning, with the command that fetches it later. agent/turntaking/ loads the file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from agent.config import ModelConfig
from agent.languages import Language
from agent.models import ModelError
from agent.models.entries import Profile, TtsEngine
from agent.models.index import pull_index_entry
from agent.models.index_entries import SMART_TURN_V3
from agent.models.pull import is_present, pull_command
from agent.models.synth import entry_path

logger = logging.getLogger(__name__)

_SILENCE = "turns end on silence alone (the silence endpoint)"


@dataclass(frozen=True)
class TurnModel:
    path: Path | None
    note: str = ""
    """Why there is none, and how to get one."""

    def as_dict(self) -> dict[str, object]:
        """For /health: which endpoint decides that the user has finished."""
        if self.path is not None:
            return {"path": str(self.path), "endpoint": "smart-turn", "note": None}
        return {"path": None, "endpoint": "silence", "note": self.note}


def resolve_turn_model(
    profile: Profile,
    config: ModelConfig,
    models_dir: Path,
    language: Language,
    engine: TtsEngine,
) -> TurnModel:
    if config.turn is not None:
        path = Path(config.turn).expanduser()
        if not path.is_file():
            raise ModelError(f"--turn-model {path}: not found")
        return TurnModel(path)
    entry = profile.turn
    if entry is None:
        return _without(
            f"profile {profile.name} has no end-of-turn model: {_SILENCE}. Give "
            f"--turn-model PATH (voice-agent models pull --profile small puts one in "
            f"{entry_path(models_dir, SMART_TURN_V3)})",
            warn=False,
        )
    if is_present(entry, models_dir):
        return TurnModel(entry_path(models_dir, entry))
    command = pull_command(profile.name, models_dir, engine, language)
    if config.offline:
        return _without(
            f"--offline, and the end-of-turn model {entry.name} is not in {models_dir}: "
            f"{_SILENCE}. Fetch it with: {command}"
        )
    try:
        return TurnModel(pull_index_entry(entry, models_dir))
    except ModelError as exc:
        return _without(
            f"the end-of-turn model {entry.name} could not be fetched ({exc}): {_SILENCE}. "
            f"Fetch it with: {command}"
        )


def _without(note: str, *, warn: bool = True) -> TurnModel:
    if warn:
        logger.warning("%s", note)
    else:
        logger.info("%s", note)
    return TurnModel(None, note)
