"""Does this llama.cpp build run on this CPU? Checked in a child process, once.

llama-cpp-python compiles llama.cpp for the machine it is installed on (`-march=native`).
On a CPU that advertises Intel AMX, llama.cpp then repacks Q4/Q8 weights for AMX tile
instructions, and some virtual machines advertise AMX without allowing it: the first token
kills the process with SIGILL, with no Python error to catch. So before a server loads a
quantized model in process, a child process decodes a few tokens with it. If the child is
killed, a second one tries without weight repacking (plain CPU kernels, see
`llama_internals.without_repacking`): when that one runs, the model is loaded that way, with
a warning; when it does not, a `ModelError` says how to rebuild llama.cpp for a portable
instruction set. A verdict is remembered (per llama.cpp library, model and CPU) so that
later starts pay nothing.

Run as `python -m agent.stages.llm.build_check MODEL.gguf [--no-repack]` it is the child.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import signal
import subprocess
import sys
from pathlib import Path

from agent.models import ModelError

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 120.0
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
REBUILD_COMMAND = (
    f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall --no-cache-dir '
    "--no-deps llama-cpp-python"
)


def _library_path() -> Path | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    folder = Path(llama_cpp.__file__).parent / "lib"
    libraries = sorted(folder.glob("libggml-cpu*")) or sorted(folder.glob("libllama*"))
    return libraries[0] if libraries else None


def _uses_amx() -> bool:
    """Was this llama.cpp built with AMX kernels, on a CPU that says it has AMX?"""
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode(errors="replace")
    except Exception:
        log.warning("could not read llama.cpp's build information", exc_info=True)
        return False
    return "AMX_INT8 = 1" in info


def _stamp(model: Path, library: Path) -> str:
    parts = [str(library.resolve()), str(library.stat().st_mtime_ns), str(model.resolve()),
             str(model.stat().st_size), platform.machine(), _cpu_flags()]  # fmt: skip
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def check_llama_build(model: Path, cache_dir: Path) -> bool:
    """Whether `model` must be loaded without weight repacking (see the module docstring);
    raises ModelError when this llama.cpp build cannot run it on this CPU at all. Only AMX
    builds are checked (the ones that fault where AMX is not allowed)."""
    library = _library_path()
    if library is None or not _uses_amx():
        return False
    record = cache_dir / ".llama-build-check.json"
    stamp = _stamp(model, library)
    try:
        remembered = json.loads(record.read_text())
        if remembered.get("stamp") == stamp:
            return bool(remembered["no_repack"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    log.info("llama.cpp uses AMX here: checking that it runs (%s) in a child process", model)
    child = _run_child(model, no_repack=False)
    if child is None:
        return False
    no_repack = False
    if child.returncode < 0:
        log.warning(
            "llama.cpp crashed (%s) on this CPU with its AMX weight repacking: trying the "
            "plain CPU kernels",
            signal.Signals(-child.returncode).name,
        )
        retry = _run_child(model, no_repack=True)
        if retry is not None and retry.returncode == 0:
            no_repack = True
            log.warning(
                "the language model runs without weight repacking on this machine (slower); "
                "a portable build avoids the crash: %s",
                REBUILD_COMMAND,
            )
    if not no_repack:
        raise_for(child.returncode, child.stderr)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"stamp": stamp, "no_repack": no_repack}))
    except OSError:
        log.warning("could not remember the llama.cpp check in %s", record, exc_info=True)
    return no_repack


def _run_child(model: Path, *, no_repack: bool) -> subprocess.CompletedProcess[str] | None:
    command = [sys.executable, "-m", "agent.stages.llm.build_check", str(model)]
    try:
        return subprocess.run(
            command + (["--no-repack"] if no_repack else []),
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        log.warning("the llama.cpp check did not finish in %g s; going on", CHECK_TIMEOUT_S)
        return None


def raise_for(returncode: int, stderr: str) -> None:
    """The child's verdict: 0 is fine; a signal is this CPU refusing the build's code."""
    if returncode == 0:
        return
    if returncode < 0:
        name = signal.Signals(-returncode).name
        raise ModelError(
            f"llama.cpp crashed ({name}) running the language model on this CPU: it was "
            "compiled for instructions this machine advertises but does not allow (Intel "
            "AMX in a virtual machine does this). Rebuild it for a portable instruction "
            f"set:\n  {REBUILD_COMMAND}"
        )
    tail = "\n".join(stderr.strip().splitlines()[-5:])
    raise ModelError(f"llama.cpp could not run the language model (exit {returncode}):\n{tail}")


def _child(model: str, no_repack: bool) -> int:
    import contextlib

    from llama_cpp import Llama

    from agent.stages.llm.llama_internals import without_repacking

    with without_repacking() if no_repack else contextlib.nullcontext():
        llama = Llama(model_path=model, n_ctx=256, n_threads=1, verbose=False)
    llama.eval(llama.tokenize(b"Hello, how are you?"))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], "--no-repack" in sys.argv[2:]))
