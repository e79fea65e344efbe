"""Synthetic Whisper in CTranslate2 format, as faster-whisper reads it.

Writes `model.bin` + `config.json` (via `ctranslate2.specs.WhisperSpec`), `vocabulary.txt`,
a byte-level BPE `tokenizer.json` holding every Whisper special token, and
`preprocessor_config.json`. The weights are random (fixed seed) with the real model's
shapes, so the encoder and each decoder step cost what the real model's do.

A random decoder would emit tokens until Whisper's 448-token limit and, its log
probabilities being poor, make faster-whisper retry at every fallback temperature: far
more work than a real model does on an utterance. So the output projection is scaled to
make each step confident, and the decoder's position embeddings steer it to
`<|endoftext|>` after about a dozen tokens, as a real model ends a short utterance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from agent.models.entries import WhisperShape
from agent.models.synth.bpe import build_bpe

SAMPLING_RATE = 16000
ENCODER_POSITIONS = 1500
DECODER_POSITIONS = 448
TEXT_TOKENS_PER_UTTERANCE = 12
"""About how many tokens the synthetic decoder emits before `<|endoftext|>`."""

# faster-whisper's language order (the first 99 are those of the .en and v1/v2 models).
_LANGUAGES_TEXT = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta "
    "no th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk "
    "sq sw gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb "
    "my bo tl mg as tt haw ln ha ba jw su yue"
)
LANGUAGES = _LANGUAGES_TEXT.split()

_N_TIMESTAMPS = 1501
_TASK_TOKENS = (
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)


def special_tokens(vocab_size: int) -> tuple[int, list[str]]:
    """(number of ordinary text tokens, special tokens in id order) for a vocabulary size.

    `<|endoftext|>` comes right after the text tokens (50256 in English-only models)."""
    n_languages = 100 if vocab_size >= 51866 else 99
    specials = ["<|endoftext|>", "<|startoftranscript|>"]
    specials += [f"<|{code}|>" for code in LANGUAGES[:n_languages]]
    specials += list(_TASK_TOKENS)
    specials += [f"<|{i * 0.02:.2f}|>" for i in range(_N_TIMESTAMPS)]
    n_text = vocab_size - len(specials)
    if n_text < 256:
        raise ValueError(f"Whisper vocabulary of {vocab_size} tokens is too small")
    return n_text, specials


def _tokenizer_json(tokens: list[str], merges: list[str], specials: list[str]) -> str:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs))  # type: ignore[arg-type]
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(s, special=True) for s in specials])
    text: str = tokenizer.to_str(pretty=False)
    return text


def _sinusoids(length: int, channels: int) -> np.ndarray:
    log_timescale = math.log(10000) / (channels // 2 - 1)
    inv = np.exp(-log_timescale * np.arange(channels // 2, dtype=np.float32))
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def write_whisper(out_dir: Path, shape: WhisperShape, *, seed: int, title: str) -> Path:
    """Write a synthetic faster-whisper model directory; returns it."""
    import ctranslate2

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    d, ffn, vocab_size = shape.d_model, shape.ffn, shape.vocab_size
    n_text, specials = special_tokens(vocab_size)
    bpe_tokens, merges = build_bpe(n_text, seed=seed)
    tokens = bpe_tokens + specials
    eot = n_text
    sot = eot + 1
    lang_ids = [sot + 1 + i for i, s in enumerate(specials[2:]) if s[2:-2] in LANGUAGES]

    def rand(*dims: int, std: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(dims, dtype=np.float32) * std).astype(np.float32)

    def norm(spec: Any) -> None:
        spec.gamma = np.ones(d, dtype=np.float32)
        spec.beta = np.zeros(d, dtype=np.float32)

    def linear(spec: Any, rows: int, cols: int) -> None:
        spec.weight = rand(rows, cols)
        spec.bias = np.zeros(rows, dtype=np.float32)

    spec = ctranslate2.specs.WhisperSpec(
        shape.encoder_layers, shape.heads, shape.decoder_layers, shape.heads
    )
    enc = spec.encoder
    enc.conv1.weight = rand(d, shape.n_mels, 3)
    enc.conv1.bias = np.zeros(d, dtype=np.float32)
    enc.conv2.weight = rand(d, d, 3)
    enc.conv2.bias = np.zeros(d, dtype=np.float32)
    enc.position_encodings.encodings = _sinusoids(ENCODER_POSITIONS, d)
    norm(enc.layer_norm)
    for layer in enc.layer:
        norm(layer.self_attention.layer_norm)
        linear(layer.self_attention.linear[0], 3 * d, d)
        linear(layer.self_attention.linear[1], d, d)
        norm(layer.ffn.layer_norm)
        linear(layer.ffn.linear_0, ffn, d)
        linear(layer.ffn.linear_1, d, ffn)

    dec = spec.decoder
    dec.embeddings.weight = rand(vocab_size, d)
    # Steering: positions from `stop_at` on carry a large component along `direction`,
    # which the final layer norm turns into a large <|endoftext|> logit.
    direction = rng.standard_normal(d).astype(np.float32)
    direction /= np.linalg.norm(direction)
    positions = rand(DECODER_POSITIONS, d, std=1.0)  # varied tokens, no loops
    stop_at = 4 + TEXT_TOKENS_PER_UTTERANCE
    positions[stop_at:] += 1000.0 * direction
    dec.position_encodings.encodings = positions
    norm(dec.layer_norm)
    for layer in dec.layer:
        norm(layer.self_attention.layer_norm)
        linear(layer.self_attention.linear[0], 3 * d, d)
        linear(layer.self_attention.linear[1], d, d)
        norm(layer.attention.layer_norm)
        linear(layer.attention.linear[0], d, d)
        linear(layer.attention.linear[1], 2 * d, d)
        linear(layer.attention.linear[2], d, d)
        norm(layer.ffn.layer_norm)
        linear(layer.ffn.linear_0, ffn, d)
        linear(layer.ffn.linear_1, d, ffn)
    # Confident steps: logits with a spread of ~50 make the greedy token's log probability
    # close to 0, as a real model's mostly are (no temperature fallback).
    projection = rand(vocab_size, d, std=50.0 / math.sqrt(d))
    projection[eot] = direction * 100.0  # logit ~ -450 + 100 * N(0, 1) until stop_at
    dec.projection.weight = projection
    bias = np.zeros(vocab_size, dtype=np.float32)
    bias[eot] = -450.0
    bias[eot + 1 :] = -1000.0  # other special tokens only where the decoding rules force them
    for byte in range(256):  # no control characters or stray bytes in the text
        if not (chr(byte).isascii() and (chr(byte).isalpha() or byte == ord(" "))):
            bias[byte] = -1000.0
    dec.projection.bias = bias

    space_id = tokens.index("Ġ")
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [space_id, eot]
    spec.config.lang_ids = lang_ids
    half = shape.decoder_layers // 2
    spec.config.alignment_heads = [
        (layer, head) for layer in range(half, shape.decoder_layers) for head in range(shape.heads)
    ]
    spec.config.add_attribute("synthetic", True)
    spec.config.add_attribute("synthetic_model", title)
    spec.register_vocabulary(tokens)
    spec.validate()
    spec.optimize(quantization=shape.quantization)
    for name in ("model.bin", "config.json", "vocabulary.txt"):
        (out_dir / name).unlink(missing_ok=True)
    spec.save(str(out_dir))

    (out_dir / "tokenizer.json").write_text(
        _tokenizer_json(bpe_tokens, merges, specials), encoding="utf-8"
    )
    preprocessor = {
        "chunk_length": 30,
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": shape.n_mels,
        "hop_length": 160,
        "n_fft": 400,
        "n_samples": 30 * SAMPLING_RATE,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "processor_class": "WhisperProcessor",
        "return_attention_mask": False,
        "sampling_rate": SAMPLING_RATE,
        "synthetic": True,
    }
    (out_dir / "preprocessor_config.json").write_text(
        json.dumps(preprocessor, indent=2) + "\n", encoding="utf-8"
    )
    return out_dir
