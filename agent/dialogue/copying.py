"""A reply that only repeats what was just said.

A very small model (SmolLM2-135M) copies from its context: once two of its replies were
alike, it gave the same reply to every later question of the conversation, word for word,
whatever was asked (20 turns of one bench session); it also reads the user's message back.
Its first words show it before anything is spoken: the reply is then asked for again without
the earlier turns (SmolLM2 answered the same question sensibly without the history). A first
turn has none to leave out, so its copy is let be.

Taking up the user's words is how people answer ("You can book a table for two", "The novel
Pride and Prejudice is by Jane Austen"), and asked again without the earlier turns, a reply
loses what a follow-up refers to. So the user's message is copied only when read back at
length or as a whole chunk; of the 19 replies the bench of 2026-12-03 asked for again, 5
were such answers."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.stages.llm import Message

MIN_WORDS = 3
"""A copy is judged on at least this many words ("Yes, I can." may well begin two replies)."""
RUN_WORDS = 5
"""Words in a row of an earlier reply that make a copy, wherever they stand: SmolLM2 also
prefixes its copy ("That's wonderful. I'm glad you're interested in exploring ...")."""
READ_BACK_WORDS = 8
"""Words in a row of the user's message that read it back, wherever they stand."""

_WORD = re.compile(r"[\w']+")
_PARTIAL_WORD = re.compile(r"[\w']+$")


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

    def copied_in(self, first_chunk: str) -> bool:
        """Does the reply's first chunk repeat an earlier reply (`RUN_WORDS` of its words in a
        row, all of them when it has fewer) or read the user's message back?"""
        words = _words(first_chunk)
        if len(words) < MIN_WORDS:
            return False
        n = min(len(words), RUN_WORDS)
        return self._repeats_a_reply(words, n) or self._reads_back(words, whole_chunk=True)

    def copied_so_far(self, text: str) -> bool:
        """The same judgement on the reply's first words while its first chunk is still being
        written, so that a copy stops a few tokens in: only on what is already certain (whole
        words, runs as long as a finished chunk would need), never "not a copy"."""
        words = _words(_PARTIAL_WORD.sub("", text))
        if len(words) >= RUN_WORDS and self._repeats_a_reply(words, RUN_WORDS):
            return True
        return self._reads_back(words, whole_chunk=False)

    def _repeats_a_reply(self, words: list[str], n: int) -> bool:
        mine = _runs(words, n)
        return any(mine & _runs(_words(text), n) for text in self.replies)

    def _reads_back(self, words: list[str], *, whole_chunk: bool) -> bool:
        """`READ_BACK_WORDS` of the message in a row, or a whole chunk that is nothing but a
        run of the message ("Set a timer for 10 minutes." to that request; "Okay, I'll set a
        timer for 10 minutes." answers it)."""
        message = _words(self.message)
        if len(words) >= READ_BACK_WORDS and _runs(words, READ_BACK_WORDS) & _runs(
            message, READ_BACK_WORDS
        ):
            return True
        return (
            whole_chunk and len(words) >= MIN_WORDS and tuple(words) in _runs(message, len(words))
        )


def without_earlier_turns(prompt: list[Message]) -> list[Message]:
    """The system prompt and the user's message alone."""
    return [m for m in prompt[:1] if m["role"] == "system"] + prompt[-1:]


__all__ = ["MIN_WORDS", "READ_BACK_WORDS", "RUN_WORDS", "SaidBefore", "without_earlier_turns"]
