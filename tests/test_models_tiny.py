"""The tiny synthetic set, loaded through the real loaders, and the clear errors they give."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.config import ModelConfig
from agent.models import ModelError
from agent.models.device import DeviceInfo, detect_device
from agent.models.loaders import (
    clear_cache,
    is_synthetic,
    load_llama,
    load_piper,
    load_vad_model,
    load_whisper,
)
from agent.models.resolve import ResolvedModels, models_health, resolve_models
from agent.models.synth import synthesize


@pytest.fixture(scope="module")
def resolved(tiny_models: Path) -> ResolvedModels:
    return resolve_models(ModelConfig(models_dir=tiny_models, profile="tiny", offline=True))


@pytest.fixture(scope="module")
def cpu() -> DeviceInfo:
    return detect_device("cpu")


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def test_tiny_set_is_small_and_fast(tmp_path: Path) -> None:
    started = time.perf_counter()
    out = synthesize("tiny", tmp_path / "set")
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert elapsed < 20
    assert size < 10_000_000


def test_tiny_set_is_deterministic(tiny_models: Path, tmp_path: Path) -> None:
    again = synthesize("tiny", tmp_path / "again")
    for name in (
        "tiny-llama/tiny-llama.gguf",
        "tiny-voice/tiny-voice.onnx",
        "tiny-whisper/model.bin",
    ):
        assert (tiny_models / name).read_bytes() == (again / name).read_bytes(), name


def test_resolve_finds_the_tiny_set(tiny_models: Path, resolved: ResolvedModels) -> None:
    assert resolved.profile == "tiny"
    assert resolved.stt.is_dir() and (resolved.stt / "model.bin").is_file()
    assert resolved.llm.suffix == ".gguf" and resolved.llm.is_file()
    assert resolved.voice.suffix == ".onnx" and Path(f"{resolved.voice}.json").is_file()
    assert resolved.synthetic_kinds() == ["stt", "llm", "voice"]
    health = models_health(resolved, detect_device("cpu"))
    assert health["synthetic"] is True and "synthetic" in str(health["warning"])


def test_every_tiny_file_is_marked_synthetic(resolved: ResolvedModels) -> None:
    assert is_synthetic(resolved.stt)
    assert is_synthetic(resolved.llm)
    assert is_synthetic(resolved.voice)
    config = json.loads((resolved.stt / "preprocessor_config.json").read_text())
    assert config["synthetic"] is True


def test_whisper_transcribes_to_a_string(resolved: ResolvedModels, cpu: DeviceInfo) -> None:
    model = load_whisper(resolved.stt, cpu)
    assert load_whisper(resolved.stt, cpu) is model  # once per process
    audio = (np.random.default_rng(0).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    segments, info = model.transcribe(audio, language="en", beam_size=1)
    text = "".join(s.text for s in segments)  # decoding happens while iterating
    assert isinstance(text, str)
    assert info.language == "en"


def test_whisper_tokenizer_has_every_special_token(resolved: ResolvedModels) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(resolved.stt / "tokenizer.json"))
    for special in (
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|en|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        "<|0.00|>",
        "<|30.00|>",
    ):
        assert tok.token_to_id(special) is not None, special
    assert tok.token_to_id("<|30.00|>") == tok.get_vocab_size() - 1


def test_llama_streams_a_chat_reply(resolved: ResolvedModels, cpu: DeviceInfo) -> None:
    llm = load_llama(resolved.llm, 512, cpu)
    assert load_llama(resolved.llm, 512, cpu) is llm
    stream = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": "Hello, how are you?"},
        ],
        max_tokens=24,
        stream=True,
        seed=1,
    )
    deltas = [
        chunk["choices"][0]["delta"].get("content")
        for chunk in stream
        if chunk["choices"][0]["delta"].get("content")
    ]
    assert len(deltas) >= 2
    assert all(isinstance(d, str) for d in deltas)


def _pcm(chunks: list[object]) -> np.ndarray:
    return np.concatenate([c.audio_int16_array for c in chunks])  # type: ignore[attr-defined]


def test_piper_makes_sound_that_grows_with_text(resolved: ResolvedModels, cpu: DeviceInfo) -> None:
    voice = load_piper(resolved.voice, cpu)
    assert load_piper(resolved.voice, cpu) is voice
    short = list(voice.synthesize("Hi."))
    long = list(voice.synthesize("Hello there. This sentence is a good deal longer than that."))
    assert short[0].sample_rate == 22050 and short[0].sample_width == 2
    short_pcm, long_pcm = _pcm(short), _pcm(long)
    assert short_pcm.dtype == np.int16
    assert np.sqrt(np.mean(short_pcm.astype(np.float64) ** 2)) > 500
    assert len(long_pcm) > 2 * len(short_pcm)


def _espeak_16k(tmp_path: Path, text: str) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, timeout=30)
    with wave.open(str(wav)) as f:
        rate = f.getframerate()
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16).astype(np.float32)
    n_out = int(len(pcm) * 16000 / rate)
    resampled = np.interp(np.arange(n_out) * rate / 16000, np.arange(len(pcm)), pcm)
    return resampled.astype(np.int16)


def _speech_fraction(samples: np.ndarray) -> float:
    vad = load_vad_model()
    window = vad.WINDOW
    probs = [
        vad.probability(samples[i : i + window])
        for i in range(0, len(samples) - window + 1, window)
    ]
    return float(np.mean(np.array(probs) > 0.5))


def test_vad_hears_espeak_speech_and_not_silence(tmp_path: Path) -> None:
    import llama_cpp  # the VAD must work in a process that has llama.cpp loaded

    assert llama_cpp.__version__
    speech = _espeak_16k(tmp_path, "Hello there. The weather is lovely today, isn't it?")
    assert _speech_fraction(speech) > 0.5
    assert _speech_fraction(np.zeros(16000, dtype=np.int16)) == 0.0


# --- clear errors naming the file ----------------------------------------------------------


def _truncate(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_missing_files_name_the_file(tmp_path: Path, cpu: DeviceInfo, fresh_cache: None) -> None:
    gguf = tmp_path / "nope.gguf"
    with pytest.raises(ModelError, match=r"not found: .*nope\.gguf"):
        load_llama(gguf, 512, cpu)
    with pytest.raises(ModelError, match=r"not found: .*nope\.onnx"):
        load_piper(tmp_path / "nope.onnx", cpu)
    with pytest.raises(ModelError, match=r"not found: .*no-whisper"):
        load_whisper(tmp_path / "no-whisper", cpu)


def test_missing_companion_files_are_named(
    resolved: ResolvedModels, tmp_path: Path, cpu: DeviceInfo, fresh_cache: None
) -> None:
    stt = tmp_path / "stt"
    shutil.copytree(resolved.stt, stt)
    (stt / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"tokenizer.*tokenizer\.json"):
        load_whisper(stt, cpu)
    voice = tmp_path / "v.onnx"
    shutil.copy(resolved.voice, voice)
    with pytest.raises(ModelError, match=r"v\.onnx\.json"):
        load_piper(voice, cpu)


def test_truncated_files_name_the_file(
    resolved: ResolvedModels, tmp_path: Path, cpu: DeviceInfo, fresh_cache: None
) -> None:
    gguf = _truncate(resolved.llm, tmp_path / "cut.gguf")
    with pytest.raises(ModelError, match=r"truncated.*cut\.gguf"):
        load_llama(gguf, 512, cpu)

    onnx = _truncate(resolved.voice, tmp_path / "cut.onnx")
    shutil.copy(f"{resolved.voice}.json", f"{onnx}.json")
    with pytest.raises(ModelError, match=r"cut\.onnx"):
        load_piper(onnx, cpu)

    stt = tmp_path / "cut-whisper"
    shutil.copytree(resolved.stt, stt)
    _truncate(resolved.stt / "model.bin", stt / "model.bin")
    with pytest.raises(ModelError, match=r"cut-whisper/model\.bin"):
        load_whisper(stt, cpu)


def test_wrong_format_names_the_file(tmp_path: Path, cpu: DeviceInfo, fresh_cache: None) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip, not a GGUF" * 10)
    with pytest.raises(ModelError, match=r"not a GGUF.*model\.gguf"):
        load_llama(fake, 512, cpu)
    onnx = tmp_path / "voice.onnx"
    onnx.write_bytes(b"\x00garbage" * 100)
    Path(f"{onnx}.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"JSON.*voice\.onnx\.json"):
        load_piper(onnx, cpu)
