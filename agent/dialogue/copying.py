"""A reply that only repeats what was just said.

A very small model (SmolLM2-135M) copies from its context: once two of its replies were
alike, it gave the same reply to every later question of the conversation, word for word,
whatever was asked (20 turns of one bench session); it also reads the user's message back.
Its first words show it before anything is spoken: the reply is then asked for again without
the earlier turns (SmolLM2 answered the same question sensibly without the history). A first
turn has none to leave out, so its copy is let be.

Taking up the user's words is how people answer ("You can book a table for two", "The novel
Pride and Prejudice is by Jane Austen", "To make a really good cup of coffee"), and asked
again without the earlier turns, a reply loses what a follow-up refers to. So the user's
message is copied only when a first chunk says nothing else and nearly all of it; of the 19
replies the bench of 2026-12-03 asked for again, 5 were answers that took up its words.
(The first chunk is a clause of at least 3 and at most 8 words: agent/stages/chunker.py.)"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from agent.stages.llm import Message

MIN_WORDS = 3
"""A copy is judged on at least this many words ("Yes, I can." may well begin two replies)."""
RUN_WORDS = 5
"""Words in a row of an earlier reply that make a copy, wherever they stand: SmolLM2 also
prefixes its copy ("That's wonderful. I'm glad you're interested in exploring ..."). A
shorter first chunk copies only as the beginning of an earlier reply: three words in a row
are found in some earlier reply too often ("the answer is")."""

_WORD = re.compile(r"\w+(?:'\w+)*")
"""A word, with the apostrophes inside it ("you're"), not the quotes around it."""
_PARTIAL_WORD = re.compile(r"\w+(?:'\w*)*$")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _runs(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class SaidBefore:
    """What a reply must not begin by repeating: the assistant's earlier replies, and the
    user's message it answers."""

    replies: tuple[str, ...]
    message: str

    @classmethod
    def in_prompt(cls, prompt: list[Message]) -> SaidBefore:
        replies = tuple(m["content"] for m in prompt if m["role"] == "assistant")
        return cls(replies, prompt[-1]["content"])

    @cached_property
    def _reply_words(self) -> tuple[list[str], ...]:
        return tuple(_words(text) for text in self.replies)

    @cached_property
    def _reply_runs(self) -> set[tuple[str, ...]]:
        return set().union(*(_runs(words, RUN_WORDS) for words in self._reply_words))

    def copied_in(self, first_chunk: str) -> bool:
        """Does the reply's first chunk repeat an earlier reply (`RUN_WORDS` of its words in a
        row; a shorter chunk, the reply's beginning) or say back the user's message?"""
        words = _words(first_chunk)
        if len(words) < MIN_WORDS:
            return False
        if len(words) < RUN_WORDS:
            if any(reply[: len(words)] == words for reply in self._reply_words):
                return True
        elif _runs(words, RUN_WORDS) & self._reply_runs:
            return True
        return self._says_back(words)

    def copied_so_far(self, text: str) -> bool:
        """The judgement on an earlier reply, on the reply's first words while its first
        chunk is still being written, so that a copy stops a few tokens in: only on what is
        already certain (whole words, `RUN_WORDS` in a row), never "not a copy"."""
        words = _words(_PARTIAL_WORD.sub("", text))
        return len(words) >= RUN_WORDS and bool(_runs(words, RUN_WORDS) & self._reply_runs)

    def _says_back(self, words: list[str]) -> bool:
        """Is the chunk nothing but the user's message, all of it or all but one word? ("Set
        a timer for 10 minutes." to that request; "Okay, I'll set a timer for 10 minutes."
        and "Pride and Prejudice," to "Who wrote Pride and Prejudice?" answer it.)"""
        message = _words(self.message)
        return len(words) >= max(MIN_WORDS, len(message) - 1) and tuple(words) in _runs(
            message, len(words)
        )


def without_earlier_turns(prompt: list[Message]) -> list[Message]:
    """The system prompt and the user's message alone."""
    return [m for m in prompt[:1] if m["role"] == "system"] + prompt[-1:]


__all__ = ["MIN_WORDS", "RUN_WORDS", "SaidBefore", "without_earlier_turns"]
