"""Each conversation's llama.cpp context, kept while other conversations use the model.

One `Llama` serves every session, and its KV cache holds one token sequence. llama.cpp
reuses the longest prefix the cache shares with a new prompt, which makes a session's next
turn cheap (only the new words are evaluated), as long as no other session used the model
in between. With two sessions taking turns, each prompt used to be evaluated whole: tens of
seconds for a long history on a CPU.

So when a conversation takes the model from another, the other's sequence (its KV cells,
`llama_state_seq_get_data`) is copied out, and the newcomer's own saved sequence, if it
covers more of its prompt than what is in the cache, is copied back in. A copy costs
memory bandwidth only (about 32 kB per token for Llama 3.2 1B, 112 kB for 3B), a small
fraction of evaluating the tokens again. Nothing is copied while one conversation has the
model to itself. Saved sequences live as long as their conversation (weak references) and
within a byte budget, the longest-saved first out (a restored context leaves the store).

Everything here runs on the model's single worker thread, under ChatModel's lock.
"""

from __future__ import annotations

import ctypes
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from agent.stages.llm import llama_internals

log = logging.getLogger(__name__)

SEQUENCE = 0
"""llama-cpp-python evaluates everything in sequence 0."""

DEFAULT_BUDGET_BYTES = 2 * 1024**3


@dataclass
class SavedContext:
    tokens: list[int]
    data: bytes
    used_at: float = field(default_factory=time.monotonic)


@dataclass
class SwitchReport:
    """What taking the model cost, for the logs and the tests."""

    saved_tokens: int = 0
    restored_tokens: int = 0
    seconds: float = 0.0


class ConversationContexts:
    def __init__(self, llama: Any, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self._llama = llama
        self.budget_bytes = budget_bytes
        self._saved: weakref.WeakKeyDictionary[object, SavedContext] = weakref.WeakKeyDictionary()
        self._holder: weakref.ReferenceType[object] | None = None

    @property
    def saved_bytes(self) -> int:
        return sum(len(s.data) for s in list(self._saved.values()))

    def holds(self, owner: object) -> bool:
        return self._holder is not None and self._holder() is owner

    def switch_to(self, owner: object | None, prompt: list[int]) -> SwitchReport:
        """Make the cache hold the best prefix of `prompt` for `owner`: call before
        evaluating `prompt`. `owner` None (warm-up) takes the model without saving or
        restoring anything of its own."""
        report = SwitchReport()
        if owner is not None and self.holds(owner):
            return report
        started = time.perf_counter()
        holder = self._holder() if self._holder is not None else None
        if holder is not None and self._llama.n_tokens > 0:
            report.saved_tokens = self._save(holder)
        self._holder = weakref.ref(owner) if owner is not None else None
        saved = self._saved.pop(owner, None) if owner is not None else None
        if saved is not None:
            in_cache = _common_prefix(self._cached_tokens(), prompt)
            if _common_prefix(saved.tokens, prompt) > in_cache:
                report.restored_tokens = self._restore(saved)
        report.seconds = time.perf_counter() - started
        if report.saved_tokens or report.restored_tokens:
            log.debug(
                "llm context switch: saved %d tokens, restored %d, in %.1f ms",
                report.saved_tokens,
                report.restored_tokens,
                report.seconds * 1000,
            )
        return report

    def _cached_tokens(self) -> list[int]:
        tokens: list[int] = llama_internals.evaluated_tokens(self._llama).tolist()
        return tokens

    def _save(self, owner: object) -> int:
        ctx = llama_internals.context_pointer(self._llama)
        size = int(_lib().llama_state_seq_get_size(ctx, SEQUENCE))
        buffer = (ctypes.c_uint8 * size)()
        written = int(_lib().llama_state_seq_get_data(ctx, buffer, size, SEQUENCE))
        if written == 0 or written > size:
            log.warning("could not save a conversation's llm context (%d bytes)", size)
            return 0
        tokens = self._cached_tokens()
        self._saved[owner] = SavedContext(tokens, bytes(buffer)[:written])
        self._evict()
        return len(tokens)

    def _restore(self, saved: SavedContext) -> int:
        llama = self._llama
        llama_internals.clear_sequence(llama, SEQUENCE)
        buffer = (ctypes.c_uint8 * len(saved.data)).from_buffer_copy(saved.data)
        ctx = llama_internals.context_pointer(llama)
        if int(_lib().llama_state_seq_set_data(ctx, buffer, len(saved.data), SEQUENCE)):
            count = len(saved.tokens)
            llama_internals.set_evaluated_tokens(llama, saved.tokens)
        else:  # a failed load leaves the cache empty: the prompt is evaluated whole
            log.warning("could not restore a conversation's llm context")
            llama_internals.clear_sequence(llama, SEQUENCE)
            llama_internals.set_evaluated_tokens(llama, [])
            count = 0
        # The logits in the context are not this prompt's: llama-cpp-python must decode
        # at least one token before sampling.
        llama_internals.require_eval(llama)
        return count

    def _evict(self) -> None:
        while self.saved_bytes > self.budget_bytes and len(self._saved):
            oldest = min(self._saved.items(), key=lambda item: item[1].used_at)[0]
            del self._saved[oldest]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _lib() -> Any:
    import llama_cpp

    return llama_cpp
