"""A reply that copies what was said before (agent/dialogue/copying.py): the words check,
and the real SmolLM2-135M (the `small` set) doing it, and not doing it without its history."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConversationConfig
from agent.dialogue.copying import copies, said_before, without_earlier_turns
from agent.models.device import detect_device
from agent.models.loaders import load_llama
from agent.stages.chunker import SpeechChunker
from agent.stages.llm import Message
from agent.stages.llm.llama import ChatModel

SAME = "I'm glad you're interested in exploring more. I'll do the same. Let's do that."


def test_a_first_chunk_that_repeats_an_earlier_reply_copies() -> None:
    earlier = [SAME, "Play some relaxing music, please."]
    assert copies("I'm glad you're interested in exploring more.", earlier)
    assert copies("I'm GLAD you're interested,", earlier)  # case and marks aside
    assert copies("Play some relaxing music, please.", earlier)  # the user's words back
    # SmolLM2 prefixed its copy so: five words in a row are a copy wherever they stand.
    assert copies("That's wonderful. I'm glad you're interested in exploring", earlier)
    assert not copies("I'm glad to help.", earlier)
    assert not copies("I'm glad", earlier)  # too few words to tell
    assert not copies("Sure, I will play some relaxing music.", earlier)


def test_what_a_copy_would_repeat_and_the_prompt_without_it() -> None:
    prompt: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": SAME},
        {"role": "user", "content": "Play some music."},
    ]
    assert said_before(prompt) == [SAME, "Play some music."]
    assert without_earlier_turns(prompt) == [prompt[0], prompt[-1]]
    assert without_earlier_turns(prompt[:1] + prompt[-1:]) == prompt[:1] + prompt[-1:]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_smollm2_copies_an_earlier_reply_and_answers_without_its_history(
    small_models: Path,
) -> None:
    """Two identical replies in the history: SmolLM2-135M gives the same one to a new
    question (so it did in a bench session, 15 turns running); asked without the earlier
    turns, it answers the question."""
    gguf = small_models / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    chat = ChatModel(load_llama(gguf, 2048, detect_device("cpu")), max_reply_tokens=40)
    system = ConversationConfig().full_system_prompt
    prompt: list[Message] = [{"role": "system", "content": system}]
    for question in ("Yes, let us do that.", "Remind me to call my sister when I get home."):
        prompt += [{"role": "user", "content": question}, {"role": "assistant", "content": SAME}]
    prompt.append({"role": "user", "content": "Play some relaxing music, please."})

    async def first_chunk(messages: list[Message]) -> str:
        chunker, chunks = SpeechChunker(), []

        def on_delta(delta: str) -> bool:
            chunks.extend(chunker.push(delta))
            return bool(chunks)

        generation = await chat.generate(messages, on_delta)
        return chunks[0] if chunks else " ".join(chunker.flush()) or generation.text

    try:
        assert copies(await first_chunk(prompt), said_before(prompt))
        fresh = await first_chunk(without_earlier_turns(prompt))
        assert fresh and not copies(fresh, said_before(prompt)), fresh
    finally:
        await chat.aclose()
