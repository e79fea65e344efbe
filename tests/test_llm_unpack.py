"""A tiny quantized GGUF unpacked to F16 for the CPU (agent/stages/llm/unpack.py): the real
SmolLM2 Q4_1 through llama.cpp's own converter, its copy reused, its next-token
distributions those of the same weights; files left as they are; a failure is loud."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.app.runtime import load_chat
from agent.config import AppConfig, ModelConfig
from agent.models.device import detect_device
from agent.models.files import read_gguf_header
from agent.models.resolve import resolve_models
from agent.stages.llm import unpack
from agent.stages.llm.unpack import weights_for_cpu

TEXT = (
    "<|im_start|>system\nYou are a helpful voice assistant.<|im_end|>\n<|im_start|>user\n"
    "Who wrote the novel Pride and Prejudice?<|im_end|>\n<|im_start|>assistant\nThe novel "
    "Pride and Prejudice was written by the English author Jane Austen in 1813.<|im_end|>\n"
    "<|im_start|>user\nHow far is the moon from the earth?<|im_end|>\n<|im_start|>assistant\n"
    "The moon is about 384,400 kilometres from the earth, on average.<|im_end|>\n"
)


def _log_softmax(path: Path) -> np.ndarray:
    from llama_cpp import Llama

    llama = Llama(str(path), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    tokens = llama.tokenize(TEXT.encode(), special=True)
    llama.eval(tokens)
    scores = np.array(llama.scores[: len(tokens)], dtype=np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    result: np.ndarray = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    return result


@pytest.mark.slow
def test_the_real_smollm2_is_unpacked_once_into_the_same_weights(
    small_models: Path, tmp_path: Path
) -> None:
    resolved = resolve_models(ModelConfig(models_dir=small_models, profile="small", offline=True))
    assert resolved.llm is not None
    source = resolved.llm
    assert read_gguf_header(source)["general.file_type"] == 3  # Q4_1, as published

    weights = weights_for_cpu(source, tmp_path)
    assert weights.path.parent == tmp_path / "derived" and weights.unpacked_from == source.resolve()
    assert read_gguf_header(weights.path)["general.file_type"] == 1  # F16
    assert weights.description.startswith("F16, unpacked from Q4_1")
    made = weights.path.stat().st_mtime_ns
    assert not list(weights.path.parent.glob("*partial*"))

    again = weights_for_cpu(source, tmp_path)
    assert again == weights and again.path.stat().st_mtime_ns == made  # reused, not redone
    assert weights_for_cpu(weights.path, tmp_path).path == weights.path  # F16 stays F16

    # The same weights: llama.cpp's Q4_1 kernels round activations to 8 bits, so the two
    # differ a little; a Q4_0 requantization measured a mean KL of 0.31 and 70% agreement.
    reference, unpacked = _log_softmax(source), _log_softmax(weights.path)
    kl = (np.exp(unpacked) * (unpacked - reference)).sum(axis=1)
    agreement = (reference.argmax(axis=1) == unpacked.argmax(axis=1)).mean()
    assert kl.mean() < 0.02, kl.mean()
    assert agreement > 0.9, agreement


def test_large_and_unquantized_files_are_loaded_as_published(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = next(tiny_models.rglob("*.gguf"))  # the synthetic Llama is F32
    assert weights_for_cpu(gguf, tmp_path).description == "F32, as published"
    monkeypatch.setattr(unpack, "UNPACKED_TYPES", {})
    monkeypatch.setattr(unpack, "UNPACK_MAX_BYTES", gguf.stat().st_size - 1)
    weights = weights_for_cpu(gguf, tmp_path)
    assert weights.path == gguf.resolve() and weights.description.endswith("as published")
    assert not (tmp_path / "derived").exists()


def test_a_copy_that_cannot_be_made_is_loud_and_loads_the_source(
    tiny_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gguf = tmp_path / "model.gguf"
    shutil.copy(next(tiny_models.rglob("*.gguf")), gguf)
    monkeypatch.setattr(unpack, "UNPACKED_TYPES", {})  # treat the F32 file as quantized
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "derived").write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING, logger="agent.stages.llm.unpack"):
        weights = weights_for_cpu(gguf, tmp_path / "cache")
    assert weights.path == gguf.resolve()
    assert "unpacking to F16 failed" in weights.description
    assert any("could not unpack" in r.getMessage() for r in caplog.records)


def test_a_file_the_converter_rejects_leaves_no_partial_copy(tmp_path: Path) -> None:
    import gguf

    source = tmp_path / "unknown.gguf"
    writer = gguf.GGUFWriter(str(source), "no-such-architecture")
    writer.add_file_type(3)  # says Q4_1
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    weights = weights_for_cpu(source, tmp_path)
    assert weights.path == source.resolve()
    assert "llama.cpp's converter exited with 1" in weights.description
    assert list((tmp_path / "derived").iterdir()) == []


async def test_a_copy_that_does_not_load_is_removed_and_the_source_loaded(
    tiny_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A copy whose header reads but which llama.cpp refuses (here: its architecture's
    name garbled, as a bad disk might) must not keep the server from starting."""
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    monkeypatch.setattr(unpack, "UNPACKED_TYPES", {})  # treat the F32 file as quantized
    config = AppConfig(models=ModelConfig(models_dir=models, profile="tiny", offline=True))
    resolved = resolve_models(config.models)
    assert resolved.llm is not None
    unpacked = weights_for_cpu(resolved.llm, models)
    assert unpacked.unpacked_from == resolved.llm.resolve()
    copy = unpacked.path
    data = copy.read_bytes()
    name = data.index(b"llama", data.index(b"general.architecture"))
    copy.write_bytes(data[:name] + b"zzzzz" + data[name + 5 :])
    assert read_gguf_header(copy)["general.architecture"] == "zzzzz"

    with caplog.at_level(logging.WARNING, logger="agent.app.runtime"):
        chat = await load_chat(config, resolved, detect_device("cpu"))
    try:
        assert chat.describe()["weights"].startswith("as published (its F16 copy did not load")
        assert not copy.exists()  # made again on the next start
        assert any("could not load the F16 copy" in r.getMessage() for r in caplog.records)
    finally:
        await chat.aclose()
