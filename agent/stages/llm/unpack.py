"""A tiny quantized GGUF, unpacked to F16 once, for a CPU.

On a CPU, a reply's first token waits for its prompt, and evaluating a prompt is compute
bound: llama.cpp's batched F16 kernels beat its Q4_1 ones. For SmolLM2-135M Q4_1 on a
2-core EPYC, 30 new prompt tokens after a 500-token cached history took 224 ms on one
thread and 126 ms on two; the same weights in F16 took 132 and 82 ms. Generating a token
costs about the same either way (13.6 ms against 13.7 ms on one thread), because a model
this small is read from memory quickly in any format. F16 holds each Q4_1 weight (a 4-bit
step times an F16 scale plus an F16 offset) rounded to its 11 significant bits, about 2^-11
of the weight, far below the 4-bit steps themselves, so the replies are those of the same
weights: mean KL divergence of the next-token distribution against the unpacked weights, on
2,000 tokens of chat and prose, is 0.003 for llama.cpp's own Q4_1 kernels (they round
activations to 8 bits) and 0.0045 for a Q8_0 copy; a Q4_0 requantization measured 0.31 and
was not an option.

A bigger model is left as it is: its generation is bound by memory bandwidth, and an F16
copy three times the size of a Q4_1 file (twice a Q8_0) would slow every token
(`UNPACK_MAX_BYTES`).

The copy is made in a child process (a corrupt file must not take the server down) and
kept under the models directory, named after the source's path and keyed by its size and
modification time. A copy that cannot be made is a loud warning, and the source is loaded
as it is.

Run as `python -m agent.stages.llm.unpack SOURCE.gguf TARGET.gguf` it is the child.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agent.models.files import read_gguf_header

log = logging.getLogger(__name__)

UNPACK_MAX_BYTES = 160 * 1024**2
"""Largest source file unpacked (about 250 to 300M parameters at 4 to 5 bits each)."""
UNPACKED_TYPES = {0: "F32", 1: "F16", 32: "BF16"}
"""`general.file_type` values already unpacked."""
QUANTIZED_TYPES = {2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 15: "Q4_K_M"}
"""Names of common `general.file_type` values, for the log."""
LLAMA_FTYPE_MOSTLY_F16 = 1
CHILD_TIMEOUT_S = 300.0
FOLDER = "derived"


@dataclass(frozen=True)
class Weights:
    """The file to load and, for /health and the log, how it came to be."""

    path: Path
    description: str
    unpacked_from: Path | None = None
    """The published file `path` was made from; None when `path` is that file."""


def weights_for_cpu(model: Path, cache_dir: Path) -> Weights:
    """`model` unpacked to F16 when that helps on a CPU (see the module docstring), else
    `model` itself."""
    model = model.resolve()
    kind = _file_type(model)
    if kind is None:
        return Weights(model, "as published")
    if kind in UNPACKED_TYPES:
        return Weights(model, f"{UNPACKED_TYPES[kind]}, as published")
    name = QUANTIZED_TYPES.get(kind, f"file type {kind}")
    size = model.stat().st_size
    if size > UNPACK_MAX_BYTES:
        return Weights(model, f"{name}, as published")
    target = cache_dir / FOLDER / f"{_name(model)}.{_version(model)}.f16.gguf"
    if _complete(target):
        return Weights(target, f"F16, unpacked from {name} for the CPU ({target})", model)
    log.info("unpacking %s (%s) to F16 for the CPU: faster prompts, same weights", model, name)
    error = _unpack_in_child(model, target)
    if error is not None:
        log.warning(
            "could not unpack %s to F16 (%s): loading it as %s, with slower prompts",
            model,
            error,
            name,
        )
        return Weights(model, f"{name}, as published (unpacking to F16 failed: {error})")
    _remove_stale(target, model)
    return Weights(target, f"F16, unpacked from {name} for the CPU ({target})", model)


def _file_type(model: Path) -> int | None:
    value = read_gguf_header(model).get("general.file_type")
    return int(value) if isinstance(value, int) else None


def _name(model: Path) -> str:
    """The source's stem and its folder's hash: two files of one name have two copies."""
    return f"{model.stem}.{hashlib.sha256(str(model.parent).encode()).hexdigest()[:8]}"


def _version(model: Path) -> str:
    stat = model.stat()
    return hashlib.sha256(f"{stat.st_size}\n{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def _complete(target: Path) -> bool:
    try:
        read_gguf_header(target)
    except Exception:
        return False
    return True


def _unpack_in_child(model: Path, target: Path) -> str | None:
    """None when `target` now holds the F16 copy, else why not."""
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(target.parent)
        child = subprocess.run(
            [sys.executable, "-m", "agent.stages.llm.unpack", str(model), str(partial)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
        )
        if child.returncode != 0:
            last = (child.stderr.strip().splitlines() or ["no message"])[-1]
            return f"llama.cpp's converter exited with {child.returncode}: {last}"
        if not _complete(partial):
            return "the converter wrote an incomplete file"
        os.replace(partial, target)  # whole or absent, even with two servers starting
        return None
    except subprocess.TimeoutExpired:
        return f"no copy after {CHILD_TIMEOUT_S:g} s"
    except OSError as exc:
        return str(exc)
    finally:
        with contextlib.suppress(OSError):  # the folder itself may be what failed
            partial.unlink(missing_ok=True)


def _remove_stale(target: Path, model: Path) -> None:
    """Copies of earlier versions of the same file (another size or time) are garbage, and
    so are copies named as before 2026-12-03 (`<stem>.<16 hex digits>.f16.gguf`)."""
    versions = target.parent.glob(f"{glob.escape(_name(model))}.{'?' * 12}.f16.gguf")
    former = target.parent.glob(f"{glob.escape(model.stem)}.{'?' * 16}.f16.gguf")
    for other in [*versions, *former]:
        if other != target:
            with contextlib.suppress(OSError):
                other.unlink()


def _remove_abandoned(folder: Path) -> None:
    """Partial copies of a server killed while converting: none of them can still grow."""
    for partial in folder.glob("*.partial-*"):
        with contextlib.suppress(OSError):
            if time.time() - partial.stat().st_mtime > CHILD_TIMEOUT_S:
                partial.unlink()


def _convert(source: Path, target: Path) -> int:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE_MOSTLY_F16
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    return int(
        llama_cpp.llama_model_quantize(
            str(source).encode(), str(target).encode(), ctypes.byref(params)
        )
    )


if __name__ == "__main__":
    sys.exit(1 if _convert(Path(sys.argv[1]), Path(sys.argv[2])) else 0)


__all__ = ["UNPACK_MAX_BYTES", "Weights", "weights_for_cpu"]
