"""Synthetic llama-architecture chat model in GGUF, as llama.cpp reads it.

A byte-level BPE tokenizer (gpt2 style: tokens, merges, Llama 3 control tokens), the
Llama 3 chat template and random weights (fixed seed) of the given shape. Shapes that
llama.cpp can K-quantize are written as F16 and quantized with `llama_model_quantize` to
the registry's type (Q4_K_M), as the published files are; the tiny model stays F32.

Random logits are nearly flat, so sampling would pick tokens uniformly and never stop.
The output norm is scaled up so each step is confident, and the rows
of the end-of-turn and punctuation tokens are longer, so a reply has clauses and ends
after a few dozen tokens, as a real model's does: that keeps timings honest.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from pathlib import Path

import numpy as np

from agent.models.entries import LlamaShape
from agent.models.synth.bpe import build_bpe

logger = logging.getLogger(__name__)

SYNTHETIC_KEY = "voice_agent.synthetic"

CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

_NAMED_SPECIALS = {
    0: "<|begin_of_text|>",
    1: "<|end_of_text|>",
    4: "<|finetune_right_pad_id|>",
    6: "<|start_header_id|>",
    7: "<|end_header_id|>",
    8: "<|eom_id|>",
    9: "<|eot_id|>",
    10: "<|python_tag|>",
}
BOS, EOS_TEXT, EOT = 0, 1, 9  # offsets into the special tokens

# Row lengths (x the others') of tokens that should come up more often than at random.
_BOOSTED = {".": 2.3, ",": 2.3, "?": 1.6, "!": 1.4}
_EOT_BOOST = 2.1
_LOGIT_SPREAD = 12.0
"""Standard deviation of the logits: large enough that each step is confident."""


def special_tokens(count: int) -> list[str]:
    reserved = 0
    out = []
    for i in range(count):
        if i in _NAMED_SPECIALS:
            out.append(_NAMED_SPECIALS[i])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return out


class _Weights:
    """Random normal weights, fast: slices of one fixed random pool at random offsets."""

    def __init__(self, seed: int, pool_size: int = 1 << 22) -> None:
        self.rng = np.random.default_rng(seed)
        self.pool = self.rng.standard_normal(2 * pool_size, dtype=np.float32)
        self.pool_size = pool_size

    def normal(self, shape: tuple[int, ...], std: float, dtype: type[np.generic]) -> np.ndarray:
        n = int(np.prod(shape))
        out = np.empty(n, dtype=dtype)
        for start in range(0, n, self.pool_size):
            size = min(self.pool_size, n - start)
            offset = int(self.rng.integers(self.pool_size))
            out[start : start + size] = self.pool[offset : offset + size] * std
        return out.reshape(shape)


def _tensor_plan(shape: LlamaShape) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape, role) in file order; role is 'embd', 'norm', 'onorm' or 'w'."""
    d, kv = shape.hidden, shape.kv_heads * shape.head_dim
    plan: list[tuple[str, tuple[int, ...], str]] = [
        ("token_embd.weight", (shape.vocab_size, d), "embd")
    ]
    for i in range(shape.layers):
        p = f"blk.{i}."
        plan += [
            (p + "attn_norm.weight", (d,), "norm"),
            (p + "attn_q.weight", (d, d), "w"),
            (p + "attn_k.weight", (kv, d), "w"),
            (p + "attn_v.weight", (kv, d), "w"),
            (p + "attn_output.weight", (d, d), "w"),
            (p + "ffn_norm.weight", (d,), "norm"),
            (p + "ffn_gate.weight", (shape.ffn, d), "w"),
            (p + "ffn_up.weight", (shape.ffn, d), "w"),
            (p + "ffn_down.weight", (d, shape.ffn), "w"),
        ]
    plan.append(("output_norm.weight", (d,), "onorm"))
    return plan


def _write_unquantized(
    path: Path, shape: LlamaShape, *, seed: int, title: str, float_type: str
) -> None:
    import gguf

    logging.getLogger("gguf").setLevel(logging.WARNING)  # one line per tensor otherwise
    n_special = shape.special_tokens
    n_text = shape.vocab_size - n_special
    tokens, merges = build_bpe(n_text, seed=seed)
    specials = special_tokens(n_special)
    tokens = tokens + specials
    types = [gguf.TokenType.NORMAL] * n_text + [gguf.TokenType.CONTROL] * n_special

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"synthetic {title}")
    writer.add_description("SYNTHETIC: random weights, for tests and timing only")
    writer.add_bool(SYNTHETIC_KEY, True)
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(shape.vocab_size)
    f16 = float_type == "F16"
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(n_text + BOS)
    writer.add_eos_token_id(n_text + EOT)
    writer.add_eot_token_id(n_text + EOT)
    writer.add_add_bos_token(False)  # the chat template writes it
    writer.add_chat_template(CHAT_TEMPLATE)

    weights = _Weights(seed)
    wtype: type[np.generic] = np.float16 if f16 else np.float32
    plan = _tensor_plan(shape)
    for name, dims, role in plan:
        dtype = np.dtype(np.float32 if role in ("norm", "onorm") else wtype)
        writer.add_tensor_info(name, dims, dtype, int(np.prod(dims)) * dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    std = 0.02
    for _name, dims, role in plan:
        if role == "norm":
            tensor = np.ones(dims, dtype=np.float32)
        elif role == "onorm":
            # logits = rmsnorm(h) . embedding row: spread ~ weight * std * sqrt(d)
            tensor = np.full(dims, _LOGIT_SPREAD / (std * np.sqrt(shape.hidden)), np.float32)
        else:
            # embeddings: 0.02; projections: 1/sqrt(fan_in), so each layer's output is
            # ~unit-sized, attention mixes the context in, and replies do not loop
            scale = std if role == "embd" else 1.0 / np.sqrt(dims[1])
            tensor = weights.normal(dims, scale, wtype)
            if role == "embd":
                for byte in range(256):  # no control characters or stray bytes in replies
                    if not (chr(byte).isascii() and chr(byte).isprintable()):
                        tensor[byte] *= 0.25
                for ch, boost in _BOOSTED.items():
                    tensor[ord(ch)] *= boost  # byte tokens come first, by byte value
                tensor[n_text + EOT] *= _EOT_BOOST
        writer.write_tensor_data(tensor)
    writer.close()


def quantize(src: Path, dst: Path, ftype_name: str) -> None:
    """llama.cpp's own quantizer (`llama_model_quantize`), as the published files use."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name.upper()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed ({rc}) for {src}")


def write_llama(path: Path, shape: LlamaShape, *, seed: int, title: str) -> Path:
    """Write a synthetic GGUF chat model at `path` (a .gguf file); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    quant = shape.quantization.upper()
    if quant in ("F32", "F16"):
        tmp = path.with_suffix(".tmp")
        _write_unquantized(tmp, shape, seed=seed, title=title, float_type=quant)
        tmp.replace(path)
        return path
    f16 = path.with_suffix(".f16.tmp")
    started = time.perf_counter()
    try:
        _write_unquantized(f16, shape, seed=seed, title=title, float_type="F16")
        logger.info(
            "wrote F16 %s in %.1f s; quantizing to %s", f16, time.perf_counter() - started, quant
        )
        tmp = path.with_suffix(".tmp")
        quantize(f16, tmp, quant)
        tmp.replace(path)
    finally:
        f16.unlink(missing_ok=True)
    return path
