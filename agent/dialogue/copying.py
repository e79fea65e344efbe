"""A reply that only repeats what was just said.

A very small model (SmolLM2-135M) copies from its context: once two of its replies were
alike, it gave the same reply to every later question of the conversation, word for word,
whatever was asked (20 turns of one bench session); on a first turn it sometimes reads the
user's question back. Its first chunk shows it before anything is spoken: the reply is then
asked for again without the earlier turns (SmolLM2 answered the same question sensibly
without the history). A first turn has none to leave out, so its copy is let be."""

from __future__ import annotations

import re
from collections.abc import Iterable

from agent.stages.llm import Message

MIN_WORDS = 3
"""A copy is judged on at least this many words ("Yes, I can." may well begin two replies)."""
RUN_WORDS = 5
"""Words in a row said before that make a copy, wherever they stand: SmolLM2 also prefixes
its copy ("That's wonderful. I'm glad you're interested in exploring ...")."""

_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _runs(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copies(first_chunk: str, earlier: Iterable[str]) -> bool:
    """Does the reply's first chunk repeat one of `earlier`: `RUN_WORDS` of its words in a
    row (all of them, when it has fewer) as they were said there?"""
    words = _words(first_chunk)
    if len(words) < MIN_WORDS:
        return False
    n = min(len(words), RUN_WORDS)
    mine = _runs(words, n)
    return any(mine & _runs(_words(text), n) for text in earlier)


def said_before(prompt: list[Message]) -> list[str]:
    """What a copy would repeat: the assistant's earlier replies and the user's message."""
    return [m["content"] for m in prompt if m["role"] in ("assistant",)] + [prompt[-1]["content"]]


def without_earlier_turns(prompt: list[Message]) -> list[Message]:
    """The system prompt and the user's message alone."""
    return [m for m in prompt[:1] if m["role"] == "system"] + prompt[-1:]


__all__ = ["MIN_WORDS", "RUN_WORDS", "copies", "said_before", "without_earlier_turns"]
