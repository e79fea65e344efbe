"""The tiny synthetic set, loaded through the real loaders, and the clear errors they give."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agent.app.runtime import session_vad
from agent.audio import STT_RATE, resample_pcm, rms
from agent.config import ConversationConfig, ModelConfig
from agent.models import ModelError
from agent.models.device import DeviceInfo, detect_device
from agent.models.loaders import (
    clear_cache,
    is_synthetic,
    load_llama,
    load_piper,
    load_whisper,
)
from agent.models.resolve import ResolvedModels, models_health, resolve_models
from agent.models.synth import synthesize
from agent.stages.llm import Message
from agent.stages.llm.llama import ChatModel
from agent.stages.stt import Transcriber
from agent.turntaking.vad import SpeechEnded, SpeechStarted
from benchmarks.corpus import espeak


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


def test_whisper_detects_a_language_and_decodes(resolved: ResolvedModels, cpu: DeviceInfo) -> None:
    """Through the agent's Transcriber, with the language left to Whisper: its language
    head and its decoder both run on the synthetic weights."""
    model = load_whisper(resolved.stt, cpu)
    assert load_whisper(resolved.stt, cpu) is model  # once per process
    audio = (np.random.default_rng(0).standard_normal(16000 * 2) * 3000).astype(np.int16)
    with ThreadPoolExecutor(1) as executor:
        transcript = Transcriber(model, None, executor).transcribe_blocking(audio)
    assert transcript.language in model.supported_languages
    assert transcript.audio_s == 2.0


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


async def test_llama_streams_a_reply_through_the_chat_model(
    resolved: ResolvedModels, cpu: DeviceInfo
) -> None:
    """The loader's Llama, driven as the agent drives it (ChatModel: the GGUF's own chat
    template, create_completion on the tokens, one delta per token)."""
    llm = load_llama(resolved.llm, 512, cpu)
    assert load_llama(resolved.llm, 512, cpu) is llm  # once per process
    chat = ChatModel(llm, max_reply_tokens=24)
    messages: list[Message] = [
        {"role": "system", "content": "You are brief."},
        {"role": "user", "content": "Hello, how are you?"},
    ]
    deltas: list[str] = []
    try:
        reply = await chat.generate(list(messages), deltas.append)
    finally:
        chat.close()
    assert len(deltas) >= 2 and "".join(deltas) == reply.text
    assert reply.prompt_tokens == len(chat.render(messages))
    assert len(deltas) <= 24 and reply.completion_tokens >= len(deltas)


def _pcm(chunks: list[object]) -> np.ndarray:
    return np.concatenate([c.audio_int16_array for c in chunks])  # type: ignore[attr-defined]


def test_piper_takes_every_core_only_for_urgent_chunks_where_the_llm_waits_for_it(
    resolved: ResolvedModels, cpu: DeviceInfo
) -> None:
    """A voice on every core beside an LLM on its own would contend with it: only the
    process whose in-process LLM waits for the voice (agent/stages/llm/cores.py) speaks on
    every core, and only the chunks the listener waits for, on an onnxruntime session of
    their own, while no other model runs; later chunks are spoken beside the LLM. Both
    sessions speak the same voice."""
    import os

    from agent.app.runtime import _voice_takes_the_cores, load_synthesizer
    from agent.models.loaders import shared_threads
    from agent.stages.tts.piper import PiperSynthesizer

    beside = load_synthesizer(resolved, cpu)
    alone = load_synthesizer(resolved, cpu, every_core=True)
    assert isinstance(beside, PiperSynthesizer) and isinstance(alone, PiperSynthesizer)
    assert beside.cpu_threads == shared_threads()
    assert beside.threads_for(urgent=True) == beside.threads_for(urgent=False) == shared_threads()
    assert alone.cpu_threads == alone.threads_for(urgent=True) == (os.cpu_count() or 1)
    assert alone.threads_for(urgent=False) == shared_threads()
    alone.share_cores(lambda: False)  # another model runs: no chunk takes every core
    assert alone.threads_for(urgent=True) == shared_threads()
    alone.share_cores(lambda: True)
    assert _voice_takes_the_cores(alone, cpu)
    assert not _voice_takes_the_cores(alone, replace(cpu, llm_gpu=True))
    if (os.cpu_count() or 1) > 1:
        assert not _voice_takes_the_cores(beside, cpu)
    text = "The same voice, whichever session speaks."
    urgent, later = alone.synthesize(text, urgent=True), alone.synthesize(text)
    assert rms(urgent) > 500 and abs(urgent.size - later.size) < 0.1 * later.size


def test_piper_makes_sound_that_grows_with_text(resolved: ResolvedModels, cpu: DeviceInfo) -> None:
    voice = load_piper(resolved.voice, cpu)
    assert load_piper(resolved.voice, cpu) is voice
    short = list(voice.synthesize("Hi."))
    long = list(voice.synthesize("Hello there. This sentence is a good deal longer than that."))
    assert short[0].sample_rate == 22050 and short[0].sample_width == 2
    short_pcm, long_pcm = _pcm(short), _pcm(long)
    assert short_pcm.dtype == np.int16
    assert rms(short_pcm) > 500
    assert len(long_pcm) > 2 * len(short_pcm)


def test_the_sessions_vad_hears_espeak_speech_and_not_silence(
    resolved: ResolvedModels, cpu: DeviceInfo
) -> None:
    """The VAD a session gets (agent.app.runtime.session_vad), in a process that has loaded
    llama.cpp: the two must not clash over their native libraries."""
    load_llama(resolved.llm, 512, cpu)
    pcm, rate = espeak("The weather is lovely today, isn't it?", speed=175)
    silence = np.zeros(STT_RATE, dtype=np.int16)
    speech = np.concatenate([silence, resample_pcm(pcm, rate, STT_RATE), silence])
    vad = session_vad(ConversationConfig(), semantic=False)
    block = STT_RATE // 50
    fed = [e for i in range(0, speech.size, block) for e in vad.feed(speech[i : i + block], 0)]
    # One utterance (its comma may be a pause inside it).
    events = [e for e in fed if isinstance(e, SpeechStarted | SpeechEnded)]
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    ended = events[1]
    assert isinstance(ended, SpeechEnded)
    assert ended.speech_ms > 1000 and not ended.forced
    quiet = session_vad(ConversationConfig(), semantic=False)
    assert [e for i in range(0, STT_RATE * 2, block) for e in quiet.feed(silence[:block], 0)] == []
    assert quiet.last_probability < 0.5


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
