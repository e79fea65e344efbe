"""MMS-TTS through the real transformers VitsModel (the tiny synthetic voice), the language
setting that picks it, and the errors a user sees when something is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from agent.app.runtime import load_synthesizer
from agent.config import ConversationConfig, ModelConfig
from agent.languages import ENGLISH, parse_language
from agent.models import ModelError
from agent.models.device import detect_device
from agent.models.loaders import clear_cache, load_mms
from agent.models.pull import pull_command
from agent.models.registry import entry_for, get_profile, tts_engine
from agent.models.resolve import resolve_models
from agent.stages.tts.mms import MmsSynthesizer

FRENCH = parse_language("fr")


@pytest.fixture
def mms(tiny_models: Path) -> MmsSynthesizer:
    model, tokenizer, device = load_mms(tiny_models / "tiny-mms", detect_device("cpu"))
    return MmsSynthesizer(model, tokenizer, device)


def test_tiny_mms_speaks_16_khz_audio_that_grows_with_the_text(mms: MmsSynthesizer) -> None:
    assert mms.sample_rate == 16_000
    short = mms.synthesize("Hello.")
    long = mms.synthesize("Hello there, this is a much longer sentence to say out loud.")
    assert short.dtype == np.int16 and short.size > 0
    assert long.size > short.size
    assert np.abs(long.astype(np.int32)).max() > 1000, "no energy in the voice"


def test_text_with_nothing_speakable_gives_no_audio(mms: MmsSynthesizer) -> None:
    assert mms.synthesize("").size == 0
    assert mms.synthesize("123 😀").size == 0  # outside the voice's vocabulary


def test_runtime_picks_mms_for_other_languages_and_piper_for_english(tiny_models: Path) -> None:
    french = resolve_models(
        ModelConfig(models_dir=tiny_models, profile="tiny", offline=True), FRENCH
    )
    assert french.tts == "mms" and french.voice == tiny_models / "tiny-mms"
    assert isinstance(load_synthesizer(french, detect_device("cpu")), MmsSynthesizer)
    english = resolve_models(ModelConfig(models_dir=tiny_models, profile="tiny", offline=True))
    assert english.tts == "piper" and english.voice.suffix == ".onnx"
    # --voice given as a directory is an MMS model whatever the language.
    assert tts_engine("auto", ENGLISH, tiny_models / "tiny-mms") == "mms"


def test_language_sets_whisper_the_reply_instruction_and_the_mms_voice() -> None:
    assert FRENCH.whisper == "fr" and FRENCH.iso3 == "fra"
    assert parse_language("fra") == FRENCH == parse_language("French")
    prompt = ConversationConfig(language=FRENCH).full_system_prompt
    assert "The user speaks French; always reply in French" in prompt
    assert "{language}" not in prompt and "English" not in prompt
    assert "always reply in English" in ConversationConfig().full_system_prompt
    own = ConversationConfig(language=FRENCH, system_prompt="Be brief.").full_system_prompt
    assert own == "Be brief. Always answer in French, whatever language the user speaks."
    cpu = get_profile("cpu")
    assert entry_for(cpu, "stt", FRENCH, "mms").repo == "Systran/faster-whisper-base"
    assert entry_for(cpu, "stt", ENGLISH, "piper").repo == "Systran/faster-whisper-base.en"
    assert entry_for(cpu, "voice", FRENCH, "mms").repo == "facebook/mms-tts-fra"
    # A language Whisper does not know: MMS speaks it, Whisper detects it.
    quechua = parse_language("quz")
    assert quechua.whisper is None and entry_for(cpu, "voice", quechua, "mms").repo == (
        "facebook/mms-tts-quz"
    )
    with pytest.raises(ValueError, match="unknown language"):
        parse_language("klingon")
    with pytest.raises(ValueError, match="Piper voice"):
        entry_for(cpu, "voice", FRENCH, "piper")


def test_missing_french_models_name_the_command_that_fetches_them(tmp_path: Path) -> None:
    config = ModelConfig(models_dir=tmp_path, profile="cpu", offline=True)
    with pytest.raises(ModelError) as err:
        resolve_models(config, FRENCH)
    message = str(err.value)
    assert "mms-tts-fra" in message and "faster-whisper-base" in message
    assert pull_command("cpu", tmp_path, "mms", FRENCH) in message
    assert "--language fr" in message


def test_missing_extra_is_named(tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_cache()
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if absent
    with pytest.raises(ModelError, match=r"voice-agent\[mms\]"):
        load_mms(tiny_models / "tiny-mms", detect_device("cpu"))


def test_broken_mms_directory_is_named(tmp_path: Path) -> None:
    target = tmp_path / "mms"
    with pytest.raises(ModelError, match="not found"):
        load_mms(target, detect_device("cpu"))
    target.mkdir()
    (target / "config.json").write_text('{"model_type": "vits"')  # truncated
    with pytest.raises(ModelError, match="not valid JSON"):
        load_mms(target, detect_device("cpu"))
    (target / "config.json").write_text('{"model_type": "vits"}')
    (target / "vocab.json").write_text('{"a": 1}')
    with pytest.raises(ModelError, match="weights"):
        load_mms(target, detect_device("cpu"))
