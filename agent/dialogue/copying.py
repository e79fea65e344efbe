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
The guard judges the reply's first clause or sentence of 3 to `JUDGED_WORDS` words, as the
chunker would cut it with that cap, whatever the first chunk the voice speaks (at most
`--first-chunk-words`, 6): that chunk is voiced at once and played once the guard has judged
(`CopyWatch`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from agent.stages.chunker import SpeechChunker, count_words
from agent.stages.llm import Message

MIN_WORDS = 3
"""A copy is judged on at least this many words ("Yes, I can." may well begin two replies)."""
JUDGED_WORDS = 8
"""A copy is judged on the reply's first clause or sentence, up to this many words: SmolLM2
prefixed its copies with a few words of its own ("That's wonderful. I'm glad you're
interested ..."), so a copy can show only after more words than the first chunk the voice
speaks may have (`--first-chunk-words`, 6)."""
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

    @cached_property
    def _message_words(self) -> list[str]:
        return _words(self.message)

    @cached_property
    def _run_beginnings(self) -> set[tuple[str, ...]]:
        return {run[:length] for run in self._reply_runs for length in range(1, RUN_WORDS)}

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
        """The judgement on an earlier reply, on the reply's first words while they are
        being written (`JUDGED_WORDS`), so that a copy stops a few tokens in: only on what is
        already certain (whole words, `RUN_WORDS` in a row), never "not a copy"."""
        words = _words(_PARTIAL_WORD.sub("", text))
        return len(words) >= RUN_WORDS and bool(_runs(words, RUN_WORDS) & self._reply_runs)

    def may_still_copy(self, text: str) -> bool:
        """Could the words still to come in the guard's window (`JUDGED_WORDS`, counted as
        the chunker counts them) make a copy of a reply that begins with `text` (whole words
        only)? False lets a first chunk be heard before the window ends: no earlier reply's
        run can still end in it, the words are not the beginning of an earlier reply, nor a
        piece of a user's message short enough to be said back in the window."""
        whole = _PARTIAL_WORD.sub("", text)
        words = _words(whole)
        count = len(words)
        left = JUDGED_WORDS - count_words(whole)
        message = self._message_words
        if len(message) - 1 <= JUDGED_WORDS and tuple(words) in _runs(message, count):
            return True  # may yet be all of it, said back
        if count < RUN_WORDS and any(reply[:count] == words for reply in self._reply_words):
            return True
        if left >= RUN_WORDS:
            return True  # a whole run may yet begin
        return any(
            tuple(words[count - length :]) in self._run_beginnings
            for length in range(max(1, RUN_WORDS - left), min(RUN_WORDS, count + 1))
        )

    def _says_back(self, words: list[str]) -> bool:
        """Is the chunk nothing but the user's message, all of it or all but one word? ("Set
        a timer for 10 minutes." to that request; "Okay, I'll set a timer for 10 minutes."
        and "Pride and Prejudice," to "Who wrote Pride and Prejudice?" answer it.)"""
        message = self._message_words
        return len(words) >= max(MIN_WORDS, len(message) - 1) and tuple(words) in _runs(
            message, len(words)
        )


Say = Callable[[str, int, "asyncio.Future[bool] | None"], None]
"""Hands a chunk to the voice: its text, how far into the reply's text it goes, and the
guard's verdict on it (None: nothing to wait for)."""


class CopyWatch:
    """The copy guard over a reply as it is written. It judges the reply's first clause or
    sentence of at most `JUDGED_WORDS` words (`SaidBefore.copied_in`; a run of an earlier
    reply as soon as it shows, `copied_so_far`). The first chunk the voice speaks may be
    shorter: it goes to the voice at once, with a verdict to wait for before a sound of it is
    played, and the chunks after it are held until then. The verdict is "keep" once the
    judged words were written without a copy, once no copy can show in the words still to
    come (`may_still_copy`), or when the reply ended; a copy withdraws the first chunk and
    drops the held ones, so that nothing of it is heard, and the reply asked for again is
    said unwatched."""

    def __init__(self, said: SaidBefore | None, say: Say) -> None:
        self._said = said
        self._say = say
        self._text = ""
        self._window = SpeechChunker(first_max_words=JUDGED_WORDS, end_on_phrase=False)
        self._verdict: asyncio.Future[bool] | None = None
        self._held: list[tuple[str, int]] = []

    def chunk(self, text: str, written_to: int) -> None:
        """A chunk the chunker cut, to be said as the guard allows."""
        if self._said is None:
            self._say(text, written_to, None)
        elif self._verdict is None:
            self._verdict = asyncio.get_running_loop().create_future()
            self._say(text, written_to, self._verdict)
        else:
            self._held.append((text, written_to))

    def wrote(self, delta: str) -> bool:
        """The reply's next text, after the chunks it completed; True: the reply is a copy."""
        if self._said is None:
            return False
        self._text += delta
        if self._said.copied_so_far(self._text):
            return True
        judged = self._window.push(delta)
        if judged:
            if self._said.copied_in(judged[0]):
                return True
            self._keep()
        elif self._verdict is not None and not self._said.may_still_copy(self._text):
            self._keep()
        return False

    def ended(self) -> None:
        """The reply was written to its end: what was not a copy so far is none."""
        if self._said is not None and self._verdict is not None:
            self._keep()
        self._said = None

    def withdraw(self) -> None:
        """A copy: the first chunk is not to be played, the held ones are dropped, and what
        comes next (the reply asked for again) is said as it comes."""
        self._settle(False)
        self._held.clear()
        self._said = None

    def _keep(self) -> None:
        self._settle(True)
        self._said = None
        held, self._held = self._held, []
        for text, written_to in held:
            self._say(text, written_to, None)

    def _settle(self, keep: bool) -> None:
        if self._verdict is not None and not self._verdict.done():
            self._verdict.set_result(keep)


def without_earlier_turns(prompt: list[Message]) -> list[Message]:
    """The system prompt and the user's message alone."""
    return [m for m in prompt[:1] if m["role"] == "system"] + prompt[-1:]


__all__ = [
    "JUDGED_WORDS",
    "MIN_WORDS",
    "RUN_WORDS",
    "CopyWatch",
    "SaidBefore",
    "Say",
    "without_earlier_turns",
]
