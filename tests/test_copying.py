"""A reply that copies what was said before (agent/dialogue/copying.py): the words check,
and the real SmolLM2-135M (the `small` set) doing it, the check telling it by its first
words, and the model not doing it without its history."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.config import ConversationConfig
from agent.dialogue.copying import (
    JUDGED_WORDS,
    CopyWatch,
    SaidBefore,
    without_earlier_turns,
)
from agent.models.device import detect_device
from agent.models.loaders import load_llama
from agent.stages.chunker import SpeechChunker
from agent.stages.llm import Message
from agent.stages.llm.llama import ChatModel

Said = tuple[str, int, "asyncio.Future[bool] | None"]

SAME = "I'm glad you're interested in exploring more. I'll do the same. Let's do that."


def first_chunk_of(reply: str) -> str:
    """The chunk the turn judges: the chunker's first, cut as in a reply."""
    chunker = SpeechChunker()
    return (chunker.push(reply) or chunker.flush())[0]


def test_a_first_chunk_that_repeats_an_earlier_reply_copies() -> None:
    said = SaidBefore((SAME, "The answer is: four."), "Play some relaxing music, please.")
    assert said.copied_in("I'm glad you're interested in exploring more.")
    assert said.copied_in("I'm GLAD you're interested,")  # case and marks aside
    # SmolLM2 prefixed its copy so: five words in a row are a copy wherever they stand.
    assert said.copied_so_far("That's wonderful. I'm glad you're interested in it")
    assert said.copied_in("The answer is:")  # a short chunk, as an earlier reply began
    assert not said.copied_in("So the answer is:")
    assert not said.copied_in("I'm glad to help.")
    assert not said.copied_in("I'm glad")  # too few words to tell


def watch_reply(reply: str, said: SaidBefore, step: int = 3) -> tuple[bool, list[Said]]:
    """`reply` written `step` characters at a time, as a turn watches it: (a copy?, the
    chunks handed to the voice with their verdicts)."""
    chunker, handed = SpeechChunker(), []
    watch = CopyWatch(said, lambda *chunk: handed.append(chunk))
    for start in range(0, len(reply), step):
        for chunk in chunker.push_spans(reply[start : start + step]):
            watch.chunk(*chunk)
        if watch.wrote(reply[start : start + step]):
            watch.withdraw()
            return True, handed
    watch.ended()
    for chunk in chunker.flush_spans():
        watch.chunk(*chunk)
    return False, handed


async def test_a_copy_after_the_first_chunk_is_withdrawn_before_it_is_heard() -> None:
    """The first chunk (at most 6 words) goes to the voice at once; SmolLM2's prefixed copy
    shows only in its seventh word, so the chunk waits for the verdict, the chunks after it
    are held, and a copy withdraws it: nothing of the reply is heard."""
    said = SaidBefore((SAME,), "Play some relaxing music, please.")
    copied, handed = watch_reply("That's wonderful. I'm glad you're interested in it all.", said)
    assert copied
    assert [(text, verdict.result()) for text, _, verdict in handed if verdict] == [
        ("That's wonderful. I'm glad you're interested", False)
    ]
    assert len(handed) == 1  # nothing after it was handed over

    copied, handed = watch_reply("Sure, I will play some music for you. It is calm.", said)
    assert not copied
    texts = [text for text, _, _ in handed]
    assert texts == ["Sure, I will play some music", "for you.", "It is calm."]
    # Kept at once: no run of the earlier reply can end in the words still to come.
    assert handed[0][2] is not None and handed[0][2].result()
    assert [verdict for _, _, verdict in handed[1:]] == [None, None]

    # Judged on the window however the reply was split into deltas: said back whole, and a
    # run across words the chunker counts as one ("state-of-the-art").
    timer = SaidBefore((), "Please set a timer for ten minutes now")
    said_back = "Please set a timer for ten minutes now. Okay."
    assert watch_reply(said_back, timer)[0] and watch_reply(said_back, timer, step=1)[0]
    hyphens = "Our state-of-the-art I'm glad you're interested in exploring it."
    assert watch_reply(hyphens, said)[0] and watch_reply(hyphens, said, step=1)[0]

    copied, handed = watch_reply("Yes, I can. It is done.", said)  # ended before 8 words
    assert not copied and [text for text, _, _ in handed] == ["Yes, I can.", "It is done."]
    assert handed[0][2] is not None and handed[0][2].result()


def test_a_first_chunk_is_cleared_once_no_copy_can_end_in_the_words_to_come() -> None:
    said = SaidBefore((SAME,), "Play some relaxing music, please.")
    assert said.may_still_copy("That's wonderful. I'm glad you're interested")  # a run begins
    assert not said.may_still_copy("Sure, I will play some music")
    assert said.may_still_copy("Sure, I can")  # a whole run may yet begin
    assert said.may_still_copy("Play some relaxing music")  # may yet be said back whole
    assert not said.may_still_copy("One two three four five six seven eight")


def test_the_users_words_are_copied_only_when_said_back_whole() -> None:
    """Taking up the user's words answers them; saying them back, nothing else and nearly
    all of them, does not. The first three are replies the bench of 2026-12-03 asked for
    again; the chunks are cut as the chunker cuts a reply."""
    cases = [
        ("Who wrote the novel pride and prejudice?", "The novel Pride and Prejudice is by Jane."),
        ("I would like to book a table for 2 to hide.", "You can use a table for 2 to hide."),
        ("I've been learning to play the piano for about three months.", "Great, you've been"),
        ("Who wrote Pride and Prejudice?", "Pride and Prejudice, published in 1813, is hers."),
        (
            "Can you tell me how to make a really good cup of coffee at home?",
            "To make a really good cup of coffee at home, grind the beans.",
        ),
        ("Set a timer for 10 minutes.", "Okay, I'll set a timer for 10 minutes."),
        ("Play some relaxing music, please.", "Sure, I will play some relaxing music."),
    ]
    for message, reply in cases:
        assert not SaidBefore((), message).copied_in(first_chunk_of(reply)), (message, reply)
    assert SaidBefore((), "Set a timer for 10 minutes.").copied_in("Set a timer for 10 minutes.")
    music = SaidBefore((), "Play some relaxing music, please.")
    assert music.copied_in(first_chunk_of("Play some relaxing music, please."))
    assert music.copied_in("Some relaxing music, please.")  # all but one of its words
    assert not music.copied_in("Relaxing music, please.")
    assert not SaidBefore((), "Hi.").copied_in("Hi.")  # too few words to tell


def test_a_copy_shows_in_its_first_words_before_its_chunk_is_finished() -> None:
    said = SaidBefore((SAME,), "Play some relaxing music.")
    assert said.copied_so_far("I'm glad you're interested in ")
    assert not said.copied_so_far("I'm glad you're interested in")  # "in" may go on: "inside"
    assert not said.copied_so_far("I'm glad you'")
    assert not said.copied_so_far("I'm glad you're")  # a finished chunk would tell, not this
    # The user's words are judged on the whole chunk only: more may follow.
    assert not said.copied_so_far("Play some relaxing music ")
    assert not said.copied_so_far("")
    assert not said.copied_so_far("'")


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

    async def watched(messages: list[Message]) -> tuple[bool, str, list[Said]]:
        """The reply as a turn watches it: (a copy?, the text written, the chunks said)."""
        chunker, said_chunks, text, copied = SpeechChunker(), [], "", False
        watch = CopyWatch(SaidBefore.in_prompt(prompt), lambda *c: said_chunks.append(c))

        def on_delta(delta: str) -> bool:
            nonlocal text, copied
            text += delta
            for chunk in chunker.push_spans(delta):
                watch.chunk(*chunk)
            copied = watch.wrote(delta)
            return copied

        await chat.generate(messages, on_delta)
        watch.withdraw() if copied else watch.ended()
        return copied, text, said_chunks

    try:
        copied, first_words, said_chunks = await watched(prompt)
        assert copied, first_words
        # Told by its first words, and nothing of it heard: the chunk handed to the voice is
        # withdrawn, none after it was handed over.
        assert len(first_words.split()) <= JUDGED_WORDS + 1, first_words
        assert all(v is not None and not v.result() for _, _, v in said_chunks), said_chunks
        copied, fresh, said_chunks = await watched(without_earlier_turns(prompt))
        assert not copied and said_chunks, fresh
        assert all(v is None or v.result() for _, _, v in said_chunks), said_chunks
    finally:
        await chat.aclose()
