"""The cut window through the real libraries (faster-whisper, CTranslate2) on synthetic
Whisper models: the tiny set's English-only model, and one with 128 mel bins as large-v3
has. Random weights: these test the path and its bookkeeping, not the words."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.audio import STT_RATE, Int16Array, resample_pcm
from agent.models.device import detect_device
from agent.models.loaders import load_whisper
from agent.models.registry import TINY_WHISPER
from agent.models.synth.whisper_ct2 import write_whisper
from agent.stages.stt import FULL_WINDOW_S, Transcriber, WindowCounts
from agent.stages.stt_guard import WindowGuard
from agent.stages.whisper_window import WhisperWindow
from benchmarks.corpus import espeak


@pytest.fixture(scope="module")
def tiny_whisper(tiny_models: Path) -> Any:
    return load_whisper(tiny_models / "tiny-whisper", detect_device("cpu"))


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1, thread_name_prefix="stt-test") as pool:
        yield pool


@pytest.fixture
def speech(tmp_path: Path) -> Int16Array:
    pcm, rate = espeak("What is the capital of Australia?")
    return resample_pcm(pcm, rate, STT_RATE)


@pytest.mark.parametrize("language", ["en", None])
def test_a_short_utterance_is_decoded_on_a_cut_window(
    tiny_whisper: Any, executor: ThreadPoolExecutor, speech: Int16Array, language: str | None
) -> None:
    transcriber = Transcriber(tiny_whisper, language, executor)
    transcript = transcriber.transcribe_blocking(speech)
    assert transcript.window_s == WindowGuard().min_window_s < FULL_WINDOW_S
    assert transcript.fallback is None
    assert not transcript.fell_back
    assert transcript.text  # the synthetic decoder says a dozen tokens, then stops
    assert transcript.language == "en"  # an English-only model, as `.en` ones
    assert transcript.audio_s == pytest.approx(speech.size / STT_RATE)
    assert transcript.decode_ms is not None and transcript.decode_ms > 0
    assert transcriber.counts == WindowCounts(cut=1, fell_back=0)


def test_the_full_window_reference_is_faster_whispers_own(
    tiny_whisper: Any, executor: ThreadPoolExecutor, speech: Int16Array
) -> None:
    transcript = Transcriber(tiny_whisper, "en", executor, cut_window=False).transcribe_blocking(
        speech
    )
    segments, _info = tiny_whisper.transcribe(
        speech.astype(np.float32) / 32768.0,
        language="en",
        beam_size=1,
        temperature=0.0,
        condition_on_previous_text=False,
        without_timestamps=True,
    )
    assert transcript.text == " ".join(s.text.strip() for s in segments)
    assert transcript.window_s == FULL_WINDOW_S
    assert transcript.fallback is None


def test_a_rejected_decode_falls_back_to_the_full_window_loudly(
    tiny_whisper: Any,
    executor: ThreadPoolExecutor,
    speech: Int16Array,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A limit of one token: the synthetic decoder, which says a dozen, always hits it.
    strict = WindowGuard(tokens_base=1, tokens_per_second=0.0)
    transcriber = Transcriber(tiny_whisper, "en", executor, guard=strict)
    full = Transcriber(tiny_whisper, "en", executor, cut_window=False)
    with caplog.at_level(logging.WARNING, logger="agent.stages.stt"):
        transcript = transcriber.transcribe_blocking(speech)
    assert transcript.fell_back
    assert transcript.fallback is not None and "token limit (1)" in transcript.fallback
    assert transcript.window_s == FULL_WINDOW_S
    assert transcript.text == full.transcribe_blocking(speech).text
    assert transcriber.counts == WindowCounts(cut=1, fell_back=1)
    assert any("full 30 s window" in r.getMessage() for r in caplog.records)


def test_audio_too_long_for_a_cut_window_goes_to_the_full_window(
    tiny_whisper: Any, executor: ThreadPoolExecutor, speech: Int16Array
) -> None:
    long = np.concatenate([speech, np.zeros(29 * STT_RATE, dtype=np.int16)])
    transcriber = Transcriber(tiny_whisper, "en", executor)
    transcript = transcriber.transcribe_blocking(long)
    assert transcript.window_s == FULL_WINDOW_S
    assert transcript.fallback is None  # not a guard's refusal: the audio fills the window
    assert transcriber.counts == WindowCounts(cut=0, fell_back=0)


def test_long_speech_gets_a_window_of_its_own_length(
    tiny_whisper: Any, executor: ThreadPoolExecutor, speech: Int16Array
) -> None:
    long = np.concatenate([speech] * 6)  # about 13 s
    transcript = Transcriber(tiny_whisper, "en", executor).transcribe_blocking(long)
    assert WindowGuard().min_window_s < transcript.window_s < FULL_WINDOW_S
    assert transcript.window_s >= long.size / STT_RATE + WindowGuard().trailing_pad_s


def test_the_mel_bins_come_from_the_model(
    tmp_path: Path, executor: ThreadPoolExecutor, speech: Int16Array
) -> None:
    shape = dataclasses.replace(TINY_WHISPER.shape, n_mels=128)
    path = write_whisper(tmp_path / "whisper-128", shape, seed=5, title="128 mel bins")
    (path / "preprocessor_config.json").unlink()  # faster-whisper would then assume 80
    model = load_whisper(path, detect_device("cpu"))
    assert WhisperWindow(model).n_mels == 128
    transcript = Transcriber(model, "en", executor).transcribe_blocking(speech)
    assert transcript.window_s == WindowGuard().min_window_s
    assert transcript.text


async def test_transcribe_decodes_in_the_worker_thread(
    tiny_whisper: Any,
    executor: ThreadPoolExecutor,
    speech: Int16Array,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[str] = []
    decode = WhisperWindow.decode
    transcribe = tiny_whisper.transcribe

    def recording_decode(self: WhisperWindow, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return decode(self, *args, **kwargs)

    def recording_transcribe(*args: Any, **kwargs: Any) -> Any:
        segments, info = transcribe(*args, **kwargs)

        def iterate() -> Iterator[Any]:
            for segment in segments:  # the lazy decode runs on each step
                threads.append(threading.current_thread().name)
                yield segment

        return iterate(), info

    monkeypatch.setattr(WhisperWindow, "decode", recording_decode)
    monkeypatch.setattr(tiny_whisper, "transcribe", recording_transcribe)
    strict = WindowGuard(tokens_base=1, tokens_per_second=0.0)
    transcript = await Transcriber(tiny_whisper, "en", executor, guard=strict).transcribe(speech)
    assert transcript.fell_back
    assert len(threads) >= 2  # the cut decode, then the full window's segments
    assert all(name.startswith("stt-test") for name in threads)
