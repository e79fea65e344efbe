"""Checks on model files before a library opens them: present, non-empty, valid JSON, and
for GGUF a header read here (no `gguf` package needed) that tells a truncated download from
a foreign file."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from agent.models import ModelError


def require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise ModelError(f"{what} not found: {path}")
    if not path.is_file():
        raise ModelError(f"{what} is not a file: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"{what} is empty: {path}")


def require_dir(path: Path, name: str, layout: str) -> None:
    """`path` is a directory: `name` says whose, `layout` what it should hold."""
    if not path.exists():
        raise ModelError(f"{name} model directory not found: {path}")
    if not path.is_dir():
        raise ModelError(f"{name} model must be a {layout}, not a file: {path}")


def read_json(path: Path, what: str) -> dict[str, Any]:
    require_file(path, what)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{what} is not valid JSON (truncated?): {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{what} is not a JSON object: {path}")
    return data


# --- GGUF header (read here so that loading needs no `gguf` package) ---------------------

# ggml type id -> (bytes per block, elements per block)
_GGML_SIZES = {
    0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32), 8: (34, 32),
    9: (36, 32), 10: (84, 256), 11: (110, 256), 12: (144, 256), 13: (176, 256),
    14: (210, 256), 15: (292, 256), 24: (1, 1), 25: (2, 1), 26: (4, 1), 27: (8, 1),
    28: (8, 1), 30: (2, 1),
}  # fmt: skip
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("Q")).decode("utf-8", "replace")

    def value(self, vtype: int) -> Any:
        if vtype == 8:
            return self.string()
        if vtype == 9:
            item_type, count = self.unpack("I"), self.unpack("Q")
            if item_type in _SCALARS:
                self.take(struct.calcsize(_SCALARS[item_type]) * count)
                return None
            items = [self.value(item_type) for _ in range(count)]
            return items if count <= 64 else None
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        raise ValueError(f"unknown GGUF value type {vtype}")


def read_gguf_header(path: Path) -> dict[str, Any]:
    """Metadata scalars/strings of a GGUF file; raises ModelError if it is not a whole GGUF."""
    require_file(path, "LLM model file")
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            r = _Reader(f)
            if r.take(4) != b"GGUF":
                raise ModelError(f"not a GGUF file (wrong format): {path}")
            version = r.unpack("I")
            if version not in (2, 3):
                raise ModelError(f"unsupported GGUF version {version}: {path}")
            n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = r.string()
                meta[key] = r.value(r.unpack("I"))
            end = 0
            for _ in range(n_tensors):
                r.string()
                dims = [r.unpack("Q") for _ in range(r.unpack("I"))]
                ttype, offset = r.unpack("I"), r.unpack("Q")
                block_bytes, block_elems = _GGML_SIZES.get(ttype, (0, 1))
                n = 1
                for dim in dims:
                    n *= dim
                end = max(end, offset + n * block_bytes // block_elems)
            alignment = int(meta.get("general.alignment", 32))
            data_start = -(-f.tell() // alignment) * alignment
    except (EOFError, ValueError, UnicodeDecodeError, struct.error) as exc:
        raise ModelError(f"GGUF header is truncated or corrupt: {path}") from exc
    if size < data_start + end:
        raise ModelError(
            f"GGUF file is truncated ({size} of {data_start + end} bytes; "
            f"download it again): {path}"
        )
    return meta


__all__ = ["read_gguf_header", "read_json", "require_file"]
