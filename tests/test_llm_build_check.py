"""The llama.cpp build check: a child killed by the CPU becomes a clear error with the
rebuild command; a child that decodes is fine."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.models import ModelError
from agent.stages.llm import build_check


def test_a_child_killed_by_an_illegal_instruction_says_how_to_rebuild() -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"],
        capture_output=True,
        text=True,
    )
    assert child.returncode == -signal.SIGILL
    with pytest.raises(ModelError) as caught:
        build_check.raise_for(child.returncode, child.stderr)
    message = str(caught.value)
    assert "SIGILL" in message
    assert build_check.REBUILD_COMMAND in message
    assert "-DGGML_NATIVE=OFF" in build_check.REBUILD_COMMAND


def test_a_child_that_fails_otherwise_shows_its_error() -> None:
    with pytest.raises(ModelError, match="exit 1"):
        build_check.raise_for(1, "Traceback\nValueError: bad model\n")
    build_check.raise_for(0, "")  # fine: no exception


def test_the_child_decodes_with_the_installed_llama_cpp(tiny_models: Path) -> None:
    model = tiny_models / "tiny-llama" / "tiny-llama.gguf"
    child = subprocess.run(
        [sys.executable, "-m", "agent.stages.llm.build_check", str(model)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr


def test_the_check_runs_the_child_only_for_amx_builds_and_remembers_a_pass(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_models / "tiny-llama" / "tiny-llama.gguf"
    runs: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        runs.append(args)
        return real_run(args, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(build_check.subprocess, "run", counting_run)
    monkeypatch.setattr(build_check, "_uses_amx", lambda: False)
    assert build_check.check_llama_build(model, tmp_path) is False
    assert runs == []
    monkeypatch.setattr(build_check, "_uses_amx", lambda: True)
    assert build_check.check_llama_build(model, tmp_path) is False
    assert build_check.check_llama_build(model, tmp_path) is False
    assert len(runs) == 1  # the pass is remembered
    assert (tmp_path / ".llama-build-check.json").is_file()


def test_a_crash_with_repacking_falls_back_to_the_plain_kernels_when_they_run(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_models / "tiny-llama" / "tiny-llama.gguf"
    tried: list[bool] = []

    def child(model: Path, *, no_repack: bool) -> subprocess.CompletedProcess[str]:
        tried.append(no_repack)
        code = 0 if no_repack else -signal.SIGILL
        return subprocess.CompletedProcess([], code, "", "")

    monkeypatch.setattr(build_check, "_uses_amx", lambda: True)
    monkeypatch.setattr(build_check, "_run_child", child)
    assert build_check.check_llama_build(model, tmp_path) is True
    assert tried == [False, True]
    assert build_check.check_llama_build(model, tmp_path) is True  # remembered
    assert tried == [False, True]


def test_a_crash_without_repacking_too_is_an_error(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_models / "tiny-llama" / "tiny-llama.gguf"
    monkeypatch.setattr(build_check, "_uses_amx", lambda: True)
    monkeypatch.setattr(
        build_check,
        "_run_child",
        lambda model, *, no_repack: subprocess.CompletedProcess([], -signal.SIGILL, "", ""),
    )
    with pytest.raises(ModelError, match="SIGILL"):
        build_check.check_llama_build(model, tmp_path)
    assert not (tmp_path / ".llama-build-check.json").exists()


def test_the_child_loads_without_repacking(tiny_models: Path) -> None:
    model = tiny_models / "tiny-llama" / "tiny-llama.gguf"
    child = subprocess.run(
        [sys.executable, "-m", "agent.stages.llm.build_check", str(model), "--no-repack"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
