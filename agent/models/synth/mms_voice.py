"""Synthetic MMS-TTS voices: a random-initialised transformers `VitsModel` and a
`VitsTokenizer`, saved with `save_pretrained` exactly as the facebook/mms-tts-* repositories
lay them out (config.json, model.safetensors, vocab.json, tokenizer_config.json, ...).

`full` has facebook/mms-tts-eng's architecture (VitsConfig's defaults), so it costs what the
real voice costs; `tiny` is a few hundred kB for tests. Both sound like noise. Needs torch
and transformers (the `mms` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.models.entries import MmsShape

_PAD = "_"
# What the MMS tokenizers of Latin-script languages hold: lower-case letters, space and a
# few marks (normalisation lower-cases and drops anything else).
_SYMBOLS = " abcdefghijklmnopqrstuvwxyz'-"

_TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "ffn_dim": 32,
    "flow_size": 16,
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3]],
    "prior_encoder_num_flows": 1,
    "prior_encoder_num_wavenet_layers": 1,
    "posterior_encoder_num_wavenet_layers": 1,
    "duration_predictor_num_flows": 1,
    "duration_predictor_filter_channels": 16,
    "depth_separable_num_layers": 1,
}


def symbols(vocab_size: int) -> list[str]:
    """The tokenizer's symbols: the pad (also the blank between characters) first, then
    letters, padded with digits and punctuation up to `vocab_size`."""
    chars = [_PAD, *_SYMBOLS]
    extra = iter('0123456789.,!?;:"()')
    while len(chars) < vocab_size:
        chars.append(next(extra))
    return chars[:vocab_size]


def write_mms_voice(directory: Path, shape: MmsShape, *, seed: int, title: str, iso3: str) -> Path:
    try:
        import torch
        from transformers import VitsConfig, VitsModel, VitsTokenizer
    except ImportError as exc:
        raise RuntimeError(
            "the synthetic MMS-TTS voice needs torch and transformers: "
            'pip install torch==2.13.0 "voice-agent[mms]"'
        ) from exc
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {symbol: index for index, symbol in enumerate(symbols(shape.vocab_size))}
    vocab_path = directory / "vocab.json"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = VitsTokenizer(
        str(vocab_path),
        language=iso3,
        add_blank=True,
        normalize=True,
        phonemize=False,
        is_uroman=False,
        pad_token=_PAD,
        unk_token="<unk>",
    )
    overrides = _TINY_CONFIG if shape.quality == "tiny" else {}
    config = VitsConfig(
        vocab_size=shape.vocab_size,
        sampling_rate=shape.sample_rate,
        **overrides,
    )
    config.synthetic = True  # what agent.models.loaders.is_synthetic reads
    config.synthetic_model = title
    torch.manual_seed(seed)
    model = VitsModel(config)
    model.eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


__all__ = ["symbols", "write_mms_voice"]
