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


async def test_long_conversation_trims_rarely_and_keeps_its_prefix(tiny_models: Path) -> None:
    resolved = resolve_models(ModelConfig(models_dir=tiny_models, profile="tiny", offline=True))
    chat = ChatModel(load_llama(resolved.llm, 512, detect_device("cpu")), max_reply_tokens=16)
    try:
        history = ChatHistory("You are a test.")
        full_evaluations = 0
        trims: list[int] = []
        for turn in range(40):
            history.add_user(f"Question number {turn}: what do you think about the weather?")
            generation = await chat.generate(history.for_prompt(), lambda _: None)
            history.drop_oldest(generation.dropped_messages)
            if generation.dropped_messages:
                trims.append(turn)
            history.add_assistant("I think the weather is quite nice today, thank you.")
            assert generation.prompt_tokens <= 512 - 16
            if generation.prompt_tokens_evaluated > generation.prompt_tokens // 2:
                full_evaluations += 1
        # Each trim cuts deep (to TRIM_TO of the context), so the prompt's beginning, and the
        # cached prefix with it, changes on a few turns only, not on every turn once full.
        turns_since_full = 40 - trims[0]
        assert len(trims) <= turns_since_full // 3, trims
        assert full_evaluations <= len(trims) + 1, (full_evaluations, trims)
        assert history.messages[0]["content"] == "You are a test."
        assert len(history.messages) < 2 * 40
    finally:
        chat.close()
