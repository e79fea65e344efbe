"""Every use of llama-cpp-python's private internals, in one place.

`Llama` has no public API for what the agent needs: the tokens its KV cache holds (to know
how much of a prompt is already evaluated), a token's text without detokenizing, and the
raw context for saving and restoring one conversation's KV cells while another takes the
model (agent/stages/llm/contexts.py). Each function below names the private attribute it
uses. They were verified against llama-cpp-python VERIFIED, which pyproject.toml pins;
tests/test_internals.py exercises each on the tiny model and says what breaks when a new
version moves one. Attributes are read directly: a renamed one fails in the tests rather
than quietly turning prefix reuse off.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

VERIFIED = "0.3.36"
"""The llama-cpp-python version these internals were read in and tested against."""


def evaluated_tokens(llama: Any) -> npt.NDArray[np.intc]:
    """The tokens the context has evaluated, in order: `input_ids` up to `n_tokens`, the
    bookkeeping `Llama.generate` itself uses to reuse a cached prefix."""
    tokens: npt.NDArray[np.intc] = llama.input_ids[: llama.n_tokens]
    return tokens


def set_evaluated_tokens(llama: Any, tokens: list[int]) -> None:
    """Tell `Llama` its context now holds `tokens` (after restoring their KV cells)."""
    llama.input_ids[: len(tokens)] = tokens
    llama.n_tokens = len(tokens)


def token_text(llama: Any, token: int) -> str:
    """A token's text as the vocabulary spells it (`Llama._model.token_get_text`)."""
    text: str = llama._model.token_get_text(token)
    return text


def context_pointer(llama: Any) -> Any:
    """The `llama_context *` for the C API's state functions (`Llama._ctx.ctx`)."""
    return llama._ctx.ctx


def set_threads(llama: Any, generation: int, batch: int) -> None:
    """Threads for the next decodes: one token at a time, and a prompt's batch
    (`llama_set_n_threads` on `Llama._ctx.ctx`; `Llama.n_threads_batch` kept in step)."""
    import llama_cpp

    llama_cpp.llama_set_n_threads(context_pointer(llama), generation, batch)
    llama.n_threads, llama.n_threads_batch = generation, batch


def clear_sequence(llama: Any, sequence: int) -> None:
    """Drop every KV cell of `sequence` (`Llama._ctx.kv_cache_seq_rm`)."""
    llama._ctx.kv_cache_seq_rm(sequence, 0, -1)


def require_eval(llama: Any) -> None:
    """Make `Llama` decode at least one token before it samples: the logits in the context
    belong to another prompt (`Llama._requires_eval`)."""
    llama._requires_eval = True


_DEFAULTS_LOCK = threading.Lock()


@contextlib.contextmanager
def without_repacking() -> Iterator[None]:
    """While the block runs, `Llama(...)` loads weights without llama.cpp's repacking into
    extra buffer types (`llama_model_params.use_extra_bufts`, the CLI's `--no-repack`),
    which `Llama` does not expose: it builds its params from
    `llama_cpp.llama_model_default_params()`, replaced here for the duration. Some virtual
    machines advertise Intel AMX without allowing it, and the AMX repacking of Q4/Q8
    weights then kills the process with SIGILL on its first token; the plain CPU kernels
    run. A lock keeps two loads from swapping the function at once."""
    import llama_cpp.llama_cpp as native  # what llama_cpp/llama.py calls `llama_cpp`

    with _DEFAULTS_LOCK:
        defaults = native.llama_model_default_params

        def no_repacking() -> Any:
            params = defaults()
            params.use_extra_bufts = False
            return params

        native.llama_model_default_params = no_repacking
        try:
            yield
        finally:
            native.llama_model_default_params = defaults


__all__ = [
    "VERIFIED",
    "clear_sequence",
    "context_pointer",
    "evaluated_tokens",
    "require_eval",
    "set_evaluated_tokens",
    "token_text",
    "without_repacking",
]
