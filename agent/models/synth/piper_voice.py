"""Synthetic Piper voices (`.onnx` + `.onnx.json`, espeak phonemes), as piper-tts reads them.

`tiny`: a hand-made ONNX graph (no torch): each phoneme id picks a short waveform (a few
partials under an envelope) from a table, and the pieces are concatenated: it makes sound,
and its length grows with the text.

`medium`: Piper's own VITS (`piper.train.vits`), random-initialised with the architecture of
the medium-quality voices (en_US-lessac-medium) and exported to ONNX as `piper.train`
does. Needs torch (an optional extra: `pip install torch`). It costs what the real voice
costs; its sound is noise-like.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from agent.models.entries import PiperShape

SAMPLES_PER_ID = 768
"""Samples each phoneme id lasts in the tiny voice (35 ms at 22.05 kHz)."""
SYNTHETIC_KEY = "voice_agent.synthetic"


def voice_config(shape: PiperShape, title: str) -> dict[str, Any]:
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    return {
        "dataset": "synthetic",
        "audio": {"sample_rate": shape.sample_rate, "quality": shape.quality},
        "espeak": {"voice": "en-us"},
        "language": {"code": "en_US", "family": "en", "region": "US"},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_map": {},
        "phoneme_id_map": {k: list(v) for k, v in DEFAULT_PHONEME_ID_MAP.items()},
        "num_symbols": shape.num_symbols,
        "num_speakers": 1,
        "speaker_id_map": {},
        "piper_version": "1.0.0",
        "synthetic": True,
        "synthetic_model": title,
    }


def _waveform_table(num_symbols: int, sample_rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES_PER_ID, dtype=np.float32) / sample_rate
    envelope = np.hanning(SAMPLES_PER_ID).astype(np.float32)
    table = np.zeros((num_symbols, SAMPLES_PER_ID), dtype=np.float32)
    for row in range(num_symbols):
        f0 = rng.uniform(90.0, 220.0)
        for harmonic in range(1, 6):
            amp = rng.uniform(0.2, 1.0) / harmonic
            table[row] += amp * np.sin(2 * np.pi * f0 * harmonic * t + rng.uniform(0, 6.28))
        table[row] += 0.05 * rng.standard_normal(SAMPLES_PER_ID).astype(np.float32)
        table[row] *= 0.5 * envelope
    return table


def write_tiny_voice(onnx_path: Path, shape: PiperShape, *, seed: int, title: str) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    table = _waveform_table(shape.num_symbols, shape.sample_rate, seed)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Gather", ["table", "input"], ["pieces"], axis=0),
            # loudness follows noise_scale a little, so `scales` is a real input
            helper.make_node("Gather", ["scales", "zero"], ["noise_scale"], axis=0),
            helper.make_node("Add", ["noise_scale", "one"], ["gain"]),
            helper.make_node("Mul", ["pieces", "gain"], ["scaled"]),
            helper.make_node("Reshape", ["scaled", "out_shape"], ["output"]),
        ],
        name="synthetic_tiny_piper",
        inputs=[
            helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
            helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        ],
        outputs=[helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "time"])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
            numpy_helper.from_array(np.array([1, 1, -1], dtype=np.int64), "out_shape"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 15)], producer_name="voice-agent"
    )
    model.ir_version = 8
    helper.set_model_props(model, {SYNTHETIC_KEY: "true", "title": title})
    onnx.checker.check_model(model)
    tmp = onnx_path.with_suffix(".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(onnx_path)
    _write_config(onnx_path, voice_config(shape, title))
    return onnx_path


def _write_config(onnx_path: Path, config: dict[str, Any]) -> None:
    Path(f"{onnx_path}.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def write_vits_voice(onnx_path: Path, shape: PiperShape, *, seed: int, title: str) -> Path:
    """Random-initialised Piper VITS (medium architecture) exported to ONNX. Needs torch."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise RuntimeError(
            "the synthetic medium Piper voice needs torch: "
            "pip install torch (a CPU build is enough), or use --profile tiny"
        ) from exc
    from piper.train.vits.models import SynthesizerTrn

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = SynthesizerTrn(
        n_vocab=shape.num_symbols,
        spec_channels=1024 // 2 + 1,
        segment_size=8192 // 256,
        inter_channels=192,
        hidden_channels=192,
        filter_channels=768,
        n_heads=2,
        n_layers=6,
        kernel_size=3,
        p_dropout=0.1,
        resblock="2",
        resblock_kernel_sizes=(3, 5, 7),
        resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
        upsample_rates=(8, 8, 4),
        upsample_initial_channel=256,
        upsample_kernel_sizes=(16, 16, 8),
        n_speakers=1,
        gin_channels=0,
        use_sdp=True,
    )
    model.eval()
    with torch.no_grad():
        model.dec.remove_weight_norm()  # type: ignore[no-untyped-call]

    def infer_forward(text: Any, text_lengths: Any, scales: Any, sid: Any = None) -> Any:
        return model.infer(  # type: ignore[no-untyped-call]
            text,
            text_lengths,
            noise_scale=scales[0],
            length_scale=scales[1],
            noise_scale_w=scales[2],
            sid=sid,
        )[0].unsqueeze(1)

    model.forward = infer_forward  # type: ignore[method-assign,assignment]
    sequences = torch.randint(0, shape.num_symbols, (1, 50), dtype=torch.long)
    lengths = torch.LongTensor([sequences.size(1)])
    scales = torch.FloatTensor([0.667, 1.0, 0.8])
    tmp = onnx_path.with_suffix(".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent shapes
        _export(torch, model, (sequences, lengths, scales), tmp)
    _mark_onnx(tmp, title)
    tmp.replace(onnx_path)
    _write_config(onnx_path, voice_config(shape, title))
    return onnx_path


def _export(torch: Any, model: Any, args: tuple[Any, ...], path: Path) -> None:
    torch.onnx.export(
        model=model,
        args=args,
        f=str(path),
        verbose=False,
        opset_version=15,
        input_names=["input", "input_lengths", "scales"],
        output_names=["output"],
        dynamic_axes={
            "input": {0: "batch_size", 1: "phonemes"},
            "input_lengths": {0: "batch_size"},
            "output": {0: "batch_size", 2: "time"},
        },
        dynamo=False,
    )


def _mark_onnx(path: Path, title: str) -> None:
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    helper.set_model_props(model, {SYNTHETIC_KEY: "true", "title": title})
    onnx.save(model, str(path))
