"""The language model stage: what every backend gives a turn (a streamed `Generation`), and
the backends themselves: llama.cpp in this process (`llama.py`), or an OpenAI-compatible
inference server (`remote.py`, which reads what such servers send with `wire.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

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
    prompt_tokens_estimated: bool = False
    """True when the backend could not count the prompt's tokens (a server that reports no
    usage) and `prompt_tokens` is its estimate."""


class ChatBackend(Protocol):
    """What the runtime needs from a language model backend."""

    max_reply_tokens: int

    async def generate(
        self,
        messages: list[Message],
        on_delta: DeltaCallback,
        max_tokens: int | None = None,
        *,
        conversation: object | None = None,
    ) -> Generation:
        """Stream a reply; trims `messages` in place to fit (`Generation.dropped_messages`);
        cancelling the call stops the generation."""
        ...

    async def warm_up(self) -> float:
        """Generate a few tokens once before the first offer; seconds taken."""
        ...

    def describe(self) -> dict[str, Any]:
        """The backend, for /health."""
        ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...
