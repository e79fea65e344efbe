"""agent.models.device: a probe that fails says why, instead of passing for a missing feature."""

from __future__ import annotations

from collections.abc import Iterator

import ctranslate2
import llama_cpp
import onnxruntime
import pytest

from agent.models import device


@pytest.fixture(autouse=True)
def fresh_detection() -> Iterator[None]:
    device.detect_device.cache_clear()
    yield
    device.detect_device.cache_clear()


def broken(*_: object) -> object:
    raise OSError("libcudart.so.12: cannot open shared object file")


def test_a_broken_cuda_probe_is_logged_not_reported_as_no_gpu_build(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", broken)
    monkeypatch.setattr(onnxruntime, "get_available_providers", broken)
    info = device.detect_device("auto")
    assert not info.llm_gpu and not info.tts_gpu
    text = caplog.text
    assert "cannot ask llama.cpp whether it offloads to a GPU: OSError: libcudart" in text
    assert "cannot list onnxruntime's providers: OSError" in text
    assert "built without CUDA" not in text


def test_a_llama_build_without_cuda_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    assert not device.detect_device("auto").llm_gpu
    assert "llama.cpp was built without CUDA" in caplog.text


def test_a_failing_gpu_count_is_logged_and_means_the_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", broken)
    info = device.detect_device("auto")
    assert not info.any_gpu
    assert "cannot count CUDA GPUs (CTranslate2: OSError: libcudart" in caplog.text
