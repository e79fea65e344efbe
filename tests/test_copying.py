"""A reply that copies what was said before (agent/dialogue/copying.py): the words check,
and the real SmolLM2-135M (the `small` set) doing it, the check telling it by its first
words, and the model not doing it without its history."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConversationConfig
from agent.dialogue.copying import SaidBefore, without_earlier_turns
from agent.models.device import detect_device
from agent.models.loaders import load_llama
from agent.stages.chunker import SpeechChunker
from agent.stages.llm import Message
from agent.stages.llm.llama import ChatModel

SAME = "I'm glad you're interested in exploring more. I'll do the same. Let's do that."


def test_a_first_chunk_that_repeats_an_earlier_reply_copies() -> None:
    said = SaidBefore((SAME,), "Play some relaxing music, please.")
    assert said.copied_in("I'm glad you're interested in exploring more.")
    assert said.copied_in("I'm GLAD you're interested,")  # case and marks aside
    # SmolLM2 prefixed its copy so: five words in a row are a copy wherever they stand.
    assert said.copied_in("That's wonderful. I'm glad you're interested in exploring")
    assert not said.copied_in("I'm glad to help.")
    assert not said.copied_in("I'm glad")  # too few words to tell


def test_the_users_words_are_copied_only_when_read_back() -> None:
    """Taking up the user's words answers them; saying them back, alone or at length, does
    not. The first three are replies the bench of 2026-12-03 asked for again."""
    assert not SaidBefore((), "Who wrote the novel pride and prejudice?").copied_in(
        "The novel Pride and Prejudice is by Jane Austen"
    )
    assert not SaidBefore((), "I would like to book a table for 2 to hide.").copied_in(
        "You can use a table for 2 to hide"
    )
    piano = SaidBefore((), "I've been learning to play the piano for about three months.")
    assert not piano.copied_in("Great, you've been learning to play the piano for")
    assert piano.copied_in("So, I've been learning to play the piano for about")  # 8 in a row
    music = SaidBefore((), "Play some relaxing music, please.")
    assert music.copied_in("Play some relaxing music, please.")
    assert music.copied_in("Relaxing music, please.")  # nothing but the user's words
    assert not music.copied_in("Sure, I will play some relaxing music.")
    assert not music.copied_in("Some music.")  # too few words to tell


def test_a_copy_shows_in_its_first_words_before_its_chunk_is_finished() -> None:
    said = SaidBefore((SAME,), "I've been learning to play the piano for about three months.")
    assert said.copied_so_far("I'm glad you're interested in ")
    assert not said.copied_so_far("I'm glad you're interested in")  # "in" may go on: "inside"
    assert not said.copied_so_far("I'm glad you're")  # a finished chunk would tell, not this
    assert said.copied_so_far("So I've been learning to play the piano for a")
    # Nothing but the user's words is judged on the whole chunk only: more may follow.
    assert not SaidBefore((), "Play some relaxing music.").copied_so_far("Play some relaxing ")
    assert not said.copied_so_far("")


def test_what_a_copy_would_repeat_and_the_prompt_without_it() -> None:
    prompt: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": SAME},
        {"role": "user", "content": "Play some music."},
    ]
    assert SaidBefore.in_prompt(prompt) == SaidBefore((SAME,), "Play some music.")
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

    async def until_copied(messages: list[Message], said: SaidBefore) -> str:
        text = ""

        def on_delta(delta: str) -> bool:
            nonlocal text
            text += delta
            return said.copied_so_far(text)

        await chat.generate(messages, on_delta)
        return text

    try:
        said = SaidBefore.in_prompt(prompt)
        assert said.copied_in(await first_chunk(prompt))
        # The copy told by its first words: stopped before its first chunk ended.
        first_words = await until_copied(prompt, said)
        assert said.copied_so_far(first_words), first_words
        assert not SpeechChunker().push(first_words), first_words
        fresh = await first_chunk(without_earlier_turns(prompt))
        assert fresh and not said.copied_in(fresh), fresh
    finally:
        await chat.aclose()
