"""Where each model runs: the GPU when one is present and the library was built for it."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from agent.models import ModelError

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class DeviceInfo:
    llm_gpu: bool
    """llama.cpp offloads every layer to the GPU."""
    stt_device: str
    """"cpu" or "cuda" (faster-whisper / CTranslate2)."""
    stt_compute_type: str
    """"int8" on CPU, "float16" on CUDA."""
    tts_providers: list[str] = field(default_factory=lambda: [CPU_PROVIDER])
    """onnxruntime providers for Piper, best first."""
    description: str = ""

    @property
    def tts_gpu(self) -> bool:
        return CUDA_PROVIDER in self.tts_providers

    @property
    def any_gpu(self) -> bool:
        return self.llm_gpu or self.stt_device == "cuda" or self.tts_gpu

    def as_dict(self) -> dict[str, object]:
        """For /health and the start-up log."""
        return {
            "llm": "cuda" if self.llm_gpu else "cpu",
            "stt": f"{self.stt_device} ({self.stt_compute_type})",
            "tts": "cuda" if self.tts_gpu else "cpu",
            "description": self.description,
        }


def cuda_device_count() -> int:
    try:
        import ctranslate2

        count: int = ctranslate2.get_cuda_device_count()
        return count
    except Exception as exc:  # broken CUDA installs raise all sorts
        logger.warning("cannot count CUDA GPUs (CTranslate2: %s): using the CPU", _cause(exc))
        return 0


def llama_supports_gpu() -> bool | None:
    """Whether llama.cpp was built with GPU offload; None when asking it failed."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception as exc:
        logger.warning("cannot ask llama.cpp whether it offloads to a GPU: %s", _cause(exc))
        return None


def onnxruntime_has_cuda() -> bool:
    try:
        import onnxruntime

        return CUDA_PROVIDER in onnxruntime.get_available_providers()
    except Exception as exc:
        logger.warning("cannot list onnxruntime's providers: %s", _cause(exc))
        return False


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@functools.cache
def detect_device(requested: str = "auto") -> DeviceInfo:
    """`auto`: each model on the GPU when there is one and its library can use it.
    `cpu`: everything on the CPU. `cuda`: as auto, but an error when no GPU is usable."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ModelError(f"unknown device {requested!r} (use auto, cpu or cuda)")
    gpus = 0 if requested == "cpu" else cuda_device_count()
    llama_gpu = llama_supports_gpu() if gpus else False
    llm_gpu = gpus > 0 and bool(llama_gpu)
    stt_gpu = gpus > 0
    tts_gpu = gpus > 0 and onnxruntime_has_cuda()
    if requested == "cuda" and not gpus:
        raise ModelError(
            "--device cuda: no CUDA GPU found (CTranslate2 sees none); use --device cpu or auto"
        )
    notes = []
    if gpus and llama_gpu is None:
        notes.append(
            "llama.cpp's GPU support could not be checked (above): the LLM runs on the CPU"
        )
    elif gpus and not llm_gpu:
        notes.append(
            "llama.cpp was built without CUDA: reinstall llama-cpp-python with "
            'CMAKE_ARGS="-DGGML_CUDA=on" to run the LLM on the GPU'
        )
    if gpus and not tts_gpu:
        notes.append("onnxruntime-gpu is not installed: Piper runs on the CPU")
    for note in notes:
        logger.warning(note)
    info = DeviceInfo(
        llm_gpu=llm_gpu,
        stt_device="cuda" if stt_gpu else "cpu",
        stt_compute_type="float16" if stt_gpu else "int8",
        tts_providers=[CUDA_PROVIDER, CPU_PROVIDER] if tts_gpu else [CPU_PROVIDER],
        description=(
            f"{gpus} CUDA GPU(s); LLM on {'GPU' if llm_gpu else 'CPU'}, "
            f"STT on {'GPU' if stt_gpu else 'CPU'}, TTS on {'GPU' if tts_gpu else 'CPU'}"
            if gpus
            else "no GPU in use: everything on the CPU"
            + (" (--device cpu)" if requested == "cpu" else "")
        ),
    )
    logger.info("devices: %s", info.description)
    return info


def auto_profile() -> str:
    """`gpu` when llama.cpp has CUDA and a GPU is present, else `cpu`."""
    return "gpu" if detect_device("auto").llm_gpu else "cpu"
