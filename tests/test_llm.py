"""ChatModel through the real llama.cpp with the tiny synthetic GGUF: streaming, prefix
reuse between turns, cancellation at the next token, one generation at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import ModelConfig
from agent.llm import ChatHistory, ChatModel
from agent.models.device import detect_device
from agent.models.loaders import load_llama
from agent.models.resolve import resolve_models


@pytest.fixture
def chat(tiny_models: Path) -> Iterator[ChatModel]:
    resolved = resolve_models(ModelConfig(models_dir=tiny_models, profile="tiny", offline=True))
    llama = load_llama(resolved.llm, 2048, detect_device("cpu"))
    model = ChatModel(llama, max_reply_tokens=40)
    yield model
    model.close()


async def test_second_turn_reuses_the_evaluated_prefix(chat: ChatModel) -> None:
    history = ChatHistory("You are a test.")
    history.add_user("Hello there, how are you today?")
    deltas: list[str] = []
    first = await chat.generate(history.for_prompt(), deltas.append)
    assert deltas and "".join(deltas) == first.text
    history.add_assistant(first.text)
    history.add_user("And what about tomorrow?")
    second = await chat.generate(history.for_prompt(), lambda _: None)
    assert second.prompt_tokens > first.prompt_tokens
    # Only the new turn (and the previous reply's tail) is evaluated, not the whole history.
    assert second.prompt_tokens_evaluated < second.prompt_tokens - first.prompt_tokens // 2


async def test_cancel_stops_generation_at_the_next_token(chat: ChatModel) -> None:
    deltas: list[str] = []
    first_delta = asyncio.Event()

    def on_delta(delta: str) -> None:
        deltas.append(delta)
        first_delta.set()

    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Talk."}]
    task = asyncio.create_task(chat.generate(messages, on_delta, max_tokens=2000))
    await first_delta.wait()
    task.cancel()
    seen_at_cancel = len(deltas)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deltas) - seen_at_cancel <= 3, "generation ran on after the cancel"
    # The model is free again for the next turn.
    again = await chat.generate(messages, lambda _: None, max_tokens=4)
    assert again.queue_wait_s < 1.0


async def test_concurrent_turns_take_the_model_in_turn(chat: ChatModel) -> None:
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi."}]
    first, second = await asyncio.gather(
        chat.generate(list(messages), lambda _: None, max_tokens=16),
        chat.generate(list(messages), lambda _: None, max_tokens=16),
    )
    waits = sorted([first.queue_wait_s, second.queue_wait_s])
    assert waits[0] < 0.05 and waits[1] > 0.0
