"""Registry, profile choice, offline and no-network errors, overrides, and the CLI."""

from __future__ import annotations

import argparse
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import ModelConfig
from agent.models import ModelError
from agent.models.cli import register
from agent.models.device import detect_device
from agent.models.entries import LlamaShape, WhisperShape
from agent.models.registry import PROFILES, get_profile
from agent.models.resolve import resolve_models
from agent.models.synth import synthesize


def test_registry_entries_are_complete() -> None:
    assert set(PROFILES) == {"tiny", "small", "cpu", "gpu"}
    for name in ("cpu", "gpu"):
        profile = get_profile(name)
        for entry in profile.entries:
            assert entry.repo and entry.revision and entry.license
            assert entry.files and all(f.size > 0 for f in entry.files)
        assert isinstance(profile.llm.shape, LlamaShape)
        assert profile.llm.shape.quantization == "Q4_K_M"
        assert profile.llm.files[0].path.endswith("Q4_K_M.gguf")
    assert get_profile("cpu").voice == get_profile("gpu").voice
    assert get_profile("cpu").turn == get_profile("gpu").turn == get_profile("small").turn
    assert get_profile("tiny").turn is None
    cpu_stt, gpu_stt = get_profile("cpu").stt.shape, get_profile("gpu").stt.shape
    assert isinstance(cpu_stt, WhisperShape) and isinstance(gpu_stt, WhisperShape)
    assert gpu_stt.d_model > cpu_stt.d_model
    with pytest.raises(ValueError, match="unknown model profile"):
        get_profile("huge")


def test_cpu_device_everything_on_cpu() -> None:
    info = detect_device("cpu")
    assert not info.llm_gpu and info.stt_device == "cpu" and info.stt_compute_type == "int8"
    assert info.tts_providers == ["CPUExecutionProvider"]
    assert "cpu" in info.description.lower()


def test_offline_missing_model_names_it_and_the_pull_command(tmp_path: Path) -> None:
    config = ModelConfig(models_dir=tmp_path, profile="cpu", offline=True)
    with pytest.raises(ModelError) as err:
        resolve_models(config)
    message = str(err.value)
    assert "faster-whisper-base.en" in message and "llama-3.2-1b" in message
    assert f"voice-agent models pull --profile cpu --models {tmp_path}" in message


def test_tiny_missing_points_to_synth(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="voice-agent models synth --profile tiny"):
        resolve_models(ModelConfig(models_dir=tmp_path, profile="tiny"))


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers: a network black hole."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["refused", "no-dns", "black-hole"])
def test_no_network_fails_fast_naming_offline_and_synth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, silent_server: str
) -> None:
    endpoint = {
        "refused": "http://127.0.0.1:9",
        "no-dns": "https://hub.invalid",
        "black-hole": silent_server,
    }[kind]
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    config = ModelConfig(models_dir=tmp_path, profile="cpu", offline=False)
    started = time.monotonic()
    with pytest.raises(ModelError) as err:
        resolve_models(config)
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert "--offline" in message
    assert "voice-agent models synth --profile cpu" in message


def test_path_overrides_win(tmp_path: Path) -> None:
    tiny = synthesize("tiny", tmp_path / "tiny")
    config = ModelConfig(
        models_dir=tmp_path / "empty",
        profile="cpu",
        offline=True,
        stt=tiny / "tiny-whisper",
        llm=tiny / "tiny-llama" / "tiny-llama.gguf",
        voice=tiny / "tiny-voice" / "tiny-voice.onnx",
    )
    resolved = resolve_models(config)
    assert resolved.profile == "cpu"
    assert resolved.llm == tiny / "tiny-llama" / "tiny-llama.gguf"
    with pytest.raises(ModelError, match=r"--llm .*missing\.gguf: not found"):
        resolve_models(
            ModelConfig(
                models_dir=tmp_path, profile="tiny", offline=True, llm=tmp_path / "missing.gguf"
            )
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-agent")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_synth_then_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    args = parser.parse_args(["models", "synth", "--profile", "tiny", "--out", str(tmp_path)])
    assert args.func(args) == 0
    assert "voice-agent serve --models" in capsys.readouterr().out
    args = parser.parse_args(["models", "list", "--models", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "tiny-llama" in out and "synthetic" in out
    assert "faster-whisper-base.en" in out and "missing" in out
    resolved = resolve_models(ModelConfig(models_dir=tmp_path, profile="tiny", offline=True))
    assert resolved.llm.is_file()


def test_cli_pull_without_network_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    args = _parser().parse_args(["models", "pull", "--profile", "cpu", "--models", str(tmp_path)])
    assert args.func(args) == 1
    assert "--offline" in capsys.readouterr().err


def test_pull_is_idempotent_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[str]
) -> None:
    from agent.models.pull import pull_profile

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    profile = get_profile("cpu")
    for entry in profile.entries:
        for f in entry.files:
            path = tmp_path / entry.name / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
    # all there: no download (the end-of-turn model, from the package index, is left out)
    paths = pull_profile(replace(profile, turn=None), tmp_path, progress=False)
    assert paths[1] == tmp_path / profile.llm.name / profile.llm.main
    assert profile.turn is not None
    turn = tmp_path / profile.turn.name / profile.turn.main
    turn.parent.mkdir()
    turn.write_bytes(b"x")
    resolved = resolve_models(ModelConfig(models_dir=tmp_path, profile="cpu", offline=False))
    assert resolved.stt == tmp_path / profile.stt.name
    assert resolved.voice.name == "en_US-lessac-medium.onnx"
    assert resolved.turn == turn
    assert spawned == []


def test_synth_names_missing_packages_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(RuntimeError, match="pip install torch"):
        synthesize("cpu", tmp_path)
    assert not any(tmp_path.iterdir())


def test_small_profile_is_recorded_wheel_by_wheel() -> None:
    """Every file of the package-index profile: its wheels, members, size and SHA-256."""
    small = get_profile("small")
    assert [e.name for e in (*small.entries, small.turn) if e] == [
        "whisper-base",
        "smollm2-135m-instruct-q4_1",
        "piper-en_US-joe-medium",
        "smart-turn-v3.2",
    ]
    for entry in (*small.entries, small.turn):
        assert entry is not None and entry.source == "index" and entry.repo is None
        names = [w.name for w in entry.wheels]
        for wheel in entry.wheels:
            assert wheel.version and re.fullmatch(r"[0-9a-f]{64}", wheel.sha256)
        for f in entry.files:
            assert f.size > 0 and re.fullmatch(r"[0-9a-f]{64}", f.sha256), f
            assert f.parts and all(part.wheel in names for part in f.parts)
        assert {part.wheel for f in entry.files for part in f.parts} == set(names)
    model_bin = small.stt.files[0]
    assert model_bin.path == "model.bin" and len(model_bin.parts) == 2
    assert small.stt_multilingual is None  # whisper-base is multilingual already


def test_cli_pull_defaults_to_the_profile_serve_picks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.models.device import auto_profile

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    args = _parser().parse_args(["models", "pull", "--models", str(tmp_path)])
    assert args.profile is None
    assert args.func(args) == 1  # no hub here
    out, err = capsys.readouterr()
    assert f"profile: {auto_profile()} (what `voice-agent serve` picks here" in out
    assert "--profile small" in err
