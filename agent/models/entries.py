"""What a registry entry is: the model kinds, each architecture's shape (what `models synth`
needs to build random weights of the real size), the files an entry fetches, and a profile
(one model of each kind). The catalogue itself is agent/models/registry.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["stt", "llm", "voice"]
TtsEngine = Literal["piper", "mms"]
KINDS: tuple[Kind, ...] = ("stt", "llm", "voice")


@dataclass(frozen=True)
class WhisperShape:
    d_model: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    ffn: int
    n_mels: int
    vocab_size: int
    """51864 for English-only (`.en`) models, 51865/51866 for multilingual ones."""
    quantization: str = "float16"
    """CTranslate2 weight type on disk (the Systran conversions are float16)."""


@dataclass(frozen=True)
class LlamaShape:
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    context_length: int
    rope_theta: float
    quantization: str = "Q4_K_M"
    """llama.cpp file type; `F32` for the tiny model (K-quants need rows of 256)."""
    special_tokens: int = 256
    """Control tokens at the end of the vocabulary (Llama 3 reserves 256)."""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class PiperShape:
    sample_rate: int
    num_symbols: int
    quality: str
    """`medium` is VITS with hidden 192, 6 text-encoder layers, HiFi-GAN resblock 2,
    upsampling (8, 8, 4) from 256 channels; `tiny` is a hand-made ONNX graph."""


@dataclass(frozen=True)
class MmsShape:
    """An MMS-TTS VITS (transformers' VitsModel). `full` is facebook/mms-tts-eng's
    architecture (transformers' VitsConfig defaults: hidden 192, 6 text-encoder layers,
    HiFi-GAN upsampling (8, 8, 2, 2) from 512 channels, 16 kHz); `tiny` is a few hundred
    kB for tests."""

    vocab_size: int
    sample_rate: int
    quality: str


Shape = WhisperShape | LlamaShape | PiperShape | MmsShape


@dataclass(frozen=True)
class ModelFile:
    path: str
    """Path inside the hub repository, and inside the entry's local directory."""
    size: int
    """Expected size in bytes (approximate, see the module docstring)."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    """Local directory under the models directory."""
    kind: Kind
    title: str
    repo: str | None
    """Hub repository; `None` for models that exist only as synthetic files."""
    revision: str
    files: tuple[ModelFile, ...]
    main: str
    """What the loader opens, relative to the entry directory ("" for the directory)."""
    license: str
    shape: Shape

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    stt: ModelEntry
    llm: ModelEntry
    voice: ModelEntry
    synthetic_only: bool = False
    stt_multilingual: ModelEntry | None = None
    """Whisper for languages other than English (`None`: `stt` is multilingual already)."""
    mms: ModelEntry | None = None
    """The MMS voice when it exists only as a synthetic model (tiny); otherwise MMS
    entries are made per language by `mms_entry`."""

    def entry(self, kind: Kind) -> ModelEntry:
        entry: ModelEntry = getattr(self, kind)
        return entry

    @property
    def entries(self) -> tuple[ModelEntry, ModelEntry, ModelEntry]:
        return (self.stt, self.llm, self.voice)
