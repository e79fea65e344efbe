"""The language model stage: what every backend gives a turn (a streamed `Generation`), and
the backends themselves: llama.cpp in this process (`llama.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Message = dict[str, str]
DeltaCallback = Callable[[str], "bool | None"]
"""Gets each text piece of a reply on the event loop; returns True once it wants no more (the
reply has enough sentences): the backend then stops generating, as soon as it can."""

FinishReason = str
"""Why a generation ended: "stop" (the model ended its reply), "length" (the token ceiling),
"enough" (the caller's `on_delta` asked to stop)."""


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    prompt_tokens_evaluated: int
    completion_tokens: int
    queue_wait_s: float
    first_token_at: float | None
    """Wall time of the first text delta, or None when nothing was generated."""
    finish_reason: FinishReason = "stop"
    dropped_messages: int = 0
    """Oldest messages (after the system prompt) left out to fit the context: the caller
    drops them from its history too, so that the next prompt starts with the same tokens."""
