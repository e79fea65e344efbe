"""Whisper's decoder on one thread beside an encoder on every core, through the real
CTranslate2 on the tiny set's synthetic Whisper: the candidate is kept only where it times
faster, and whichever decodes, the tokens are the same. (The words, on the real Whisper
base: tests/test_stt_real.py.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent.app.runtime import Runtime
from agent.audio import STT_RATE, Int16Array, resample_pcm
from agent.config import AppConfig, ModelConfig
from agent.models.device import detect_device
from agent.models.loaders import cpu_threads, load_whisper, load_whisper_decoder
from agent.stages.stt import Transcriber
from agent.stages.whisper_window import WhisperWindow
from benchmarks.corpus import espeak
from tests.fakes import SlowGenerate

CPU = detect_device("cpu")


@pytest.fixture(scope="module")
def whisper_dir(tiny_models: Path) -> Path:
    return tiny_models / "tiny-whisper"


@pytest.fixture(scope="module")
def speech() -> Int16Array:
    pcm, rate = espeak("What is the capital of Australia?")
    return resample_pcm(pcm, rate, STT_RATE)


@pytest.fixture
def load_candidate(whisper_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], Any]:
    """The one-thread decoder, as a machine of at least two cores gets it."""
    cores = max(2, cpu_threads())
    monkeypatch.setattr("agent.models.loaders.os.cpu_count", lambda: cores)

    def load() -> Any:
        decoder = load_whisper_decoder(whisper_dir, CPU)
        assert decoder is not None, "a CPU of two cores or more gets a decoder to try"
        return decoder

    return load


def test_no_candidate_on_a_gpu_or_a_single_core(
    whisper_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_whisper_decoder(whisper_dir, dataclasses.replace(CPU, stt_device="cuda")) is None
    monkeypatch.setattr("agent.models.loaders.os.cpu_count", lambda: 1)
    assert load_whisper_decoder(whisper_dir, CPU) is None


def test_a_slower_candidate_is_dropped(
    whisper_dir: Path, speech: Int16Array, load_candidate: Callable[[], Any]
) -> None:
    model = load_whisper(whisper_dir, CPU)
    candidate = SlowGenerate(load_candidate(), delay_s=0.05)
    window = WhisperWindow(model, candidate)
    choice = window.choose_decoder()
    assert choice is not None and not choice.one_thread
    assert choice.one_thread_ms > choice.model_threads_ms + 40
    probing_calls = candidate.generate_calls
    window.decode(speech, 1000, "en", 40)
    assert candidate.generate_calls == probing_calls  # the model's own threads decoded
    assert window.choose_decoder() is None  # chosen once: the candidate is gone


def test_a_faster_candidate_decodes_the_same_tokens(
    whisper_dir: Path, speech: Int16Array, load_candidate: Callable[[], Any]
) -> None:
    model = load_whisper(whisper_dir, CPU)
    reference = WhisperWindow(model).decode(speech, 1000, "en", 40)
    candidate = SlowGenerate(load_candidate(), delay_s=0.0)
    window = WhisperWindow(model, candidate)
    window._ct2 = SlowGenerate(model.model, delay_s=0.05)  # the model's threads, slowed
    choice = window.choose_decoder()
    assert choice is not None and choice.one_thread
    assert choice.as_dict()["decoder"] == "one thread"
    probing_calls = candidate.generate_calls
    decode = window.decode(speech, 1000, "en", 40)
    assert candidate.generate_calls == probing_calls + 1
    assert (decode.text, decode.tokens) == (reference.text, reference.tokens)
    assert decode.text  # the synthetic decoder says a dozen tokens, then stops


def test_the_transcriber_chooses_once_on_the_real_timing(
    whisper_dir: Path, speech: Int16Array, load_candidate: Callable[[], Any]
) -> None:
    model = load_whisper(whisper_dir, CPU)
    with ThreadPoolExecutor(1) as executor:
        transcriber = Transcriber(model, "en", executor, one_thread_decoder=load_candidate())
        choice = transcriber.choose_decoder()
        assert choice is not None
        assert choice.one_thread_ms > 0 and choice.model_threads_ms > 0
        assert transcriber.choose_decoder() is None
        plain = Transcriber(model, "en", executor)
        assert transcriber.transcribe_blocking(speech).text == (
            plain.transcribe_blocking(speech).text
        )
        assert plain.choose_decoder() is None  # no candidate, nothing to choose


async def test_the_runtime_chooses_at_warm_up_and_says_so(tiny_models: Path) -> None:
    config = AppConfig(models=ModelConfig(models_dir=tiny_models, profile="tiny", offline=True))
    runtime = await Runtime.load(config)
    try:
        stt = runtime.describe()["stt"]
        if cpu_threads() < 2:
            assert runtime.stt_decoder is None and "decoder" not in stt
            return
        assert runtime.stt_decoder is not None
        assert stt["decoder"] in ("one thread", "the model's threads")
        assert set(stt["probe_ms"]) == {"one_thread", "model_threads"}
    finally:
        await runtime.aclose()
