"""When the user's turn is over: the endpoint policy.

Without a semantic model the turn ends after `endpoint_ms` of silence (the segmenter's
utterance end). With Smart Turn (agent/turntaking/smart_turn.py), a pause of `pause_ms` asks
the model: complete ends the turn now; incomplete keeps waiting, up to `endpoint_max_ms` of
silence (the utterance end), after which the turn ends anyway; or, when the transcript reads
as a finished sentence, only up to `endpoint_words_ms`.

The model hears prosody, not words: "I'd like to book a table for" followed by a pause can
sound complete. So the transcript, once it is ready (the speculative reply computes it in the
pause, before any audio exists), can hold a turn the model called complete: a turn whose
words end mid-phrase (a conjunction, a preposition, an article, a filler, a trailing comma or
ellipsis) waits for more, never the other way round. Nothing is played before the transcript
exists, so the hold costs no latency when it does not apply.

Whisper, given a phrase cut short and a pause, sometimes ends it with a word of its own: "I
would like to book a table for it." (so it heard Piper's voice over Opus, with Whisper base).
Such a word is one Whisper is unsure of. A statement whose words before an unsure last word
stop mid-phrase is an *unsure ending*: the turn waits `endpoint_unsure_ms` of silence, not the
ceiling, because real last words are sometimes unsure too (see `UNSURE_LAST_WORD`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

DANGLING_WORDS = frozenset(
    [
        "and",
        "or",
        "but",
        "so",
        "because",
        "if",
        "then",
        "that",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "while",
        "although",
        "though",
        "unless",
        "until",
        "than",
        "as",
        "for",
        "to",
        "of",
        "in",
        "on",
        "at",
        "with",
        "from",
        "about",
        "into",
        "onto",
        "by",
        "like",
        "without",
        "between",
        "over",
        "under",
        "after",
        "before",
        "through",
        "a",
        "an",
        "the",
        "my",
        "your",
        "his",
        "her",
        "its",
        "our",
        "their",
        "this",
        "these",
        "those",
        "some",
        "any",
        "every",
        "each",
        "um",
        "uh",
        "er",
        "erm",
        "hmm",
        "mm",
    ]
)
"""Words that do not end an utterance when they are its last (in English). Not "no": as an
answer ("No.") it is a whole turn far more often than "I have no ..." is cut short."""

NEVER_LAST_WORDS = frozenset(
    [
        "and",
        "or",
        "but",
        "because",
        "the",
        "a",
        "an",
        "my",
        "your",
        "their",
        "our",
        "um",
        "uh",
        "er",
        "erm",
    ]
)
"""Of those, the ones that end no sentence at all, not even a question."""

PRONOUNS_TOO = frozenset(["that", "this", "these", "those"])
"""Of the dangling words, the ones that end a statement as pronouns ("Yes, let us do
that."): dangling without a full stop, finished with one. That bench utterance waited the
2 s ceiling for its "that" (Smart Turn 0.06 to 0.2, and words that did not read finished);
at the pauses of the turns corpus, "I was going to say that." (then "um, the meeting
moved") scored below `SURE_INCOMPLETE` every time, so it waits all the same."""

SURE_INCOMPLETE = 0.05
"""Below this probability Smart Turn is sure the turn goes on, and words that read finished
do not end it before the ceiling. At the pauses of 700 ms or more inside 40 cut utterances
(benchmarks/results/turns/pauses, Whisper base), 5 transcripts read finished ("Can you find
me?", "I was wondering if you could.", "We visited Paris, Rome."): all 5 scored below 0.05;
of the 40 complete utterances' ends, 1 did ("What time is it in Tokyo?", 0.013), and waits
the ceiling."""

UNSURE_LAST_WORD = 0.5
"""A last word below this probability (its tokens' mean, marks aside) may be made up. The
made-up "it" above scored 0.33 to 0.42 at pauses of 100 to 300 ms. Of 90 complete sentences
(espeak-ng voices and Piper joe, Whisper base's own greedy transcripts), 10 ended in a word
below 0.5; of those, 2 were questions whose words before it stop mid-phrase (exempt), 1 ended
in "..." (held anyway), and 1 is a statement that waits `endpoint_unsure_ms` for nothing ("...
under the stars almost every night.", "night" at 0.43)."""

_WORD = re.compile(r"[a-z0-9']+")
"""Words, numbers among them: Whisper writes "eight" as "8", and "at 8 to 9." ends on "9"."""


class Kind(Enum):
    SEMANTIC = "semantic"
    """Smart Turn called the turn complete at a pause."""
    SILENCE = "silence"
    """No semantic model: `endpoint_ms` of silence."""
    WORDS = "words"
    """The model called it incomplete, but the transcript reads as a finished sentence, and
    the user stayed silent for `endpoint_words_ms`; or the words' ending was unsure, and the
    user stayed silent for `endpoint_unsure_ms`."""
    CEILING = "ceiling"
    """The model called it incomplete (or the words did), and the user stayed silent for
    `endpoint_max_ms`."""
    FORCED = "forced"
    """The utterance reached `max_utterance_s`."""


@dataclass(frozen=True)
class Verdict:
    complete: bool
    probability: float


class EndpointPolicy:
    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"the end-of-turn threshold must be in (0, 1), got {threshold}")
        self.threshold = threshold

    def judge(self, probability: float) -> Verdict:
        return Verdict(probability >= self.threshold, probability)


class Wait(Enum):
    """How long the turn waits after a pause, once the model and the words are in."""

    NONE = "none"
    """It is over: end it now."""
    WORDS = "words"
    """`endpoint_words_ms` of silence: the words read finished, the voice did not."""
    UNSURE = "unsure"
    """`endpoint_unsure_ms` of silence: the voice sounded finished, the words' ending is
    unsure (a last word Whisper may have made up, a question ending on "to?")."""
    CEILING = "ceiling"
    """`endpoint_max_ms` of silence."""


def wait_after_pause(
    verdict: Verdict,
    transcript: str,
    last_word_probability: float | None,
    sure_incomplete: float = SURE_INCOMPLETE,
) -> Wait:
    """The endpoint's rule at a pause, from Smart Turn's verdict and the transcript of the
    speech so far. A voice that sounds finished ends the turn, unless its words stop
    mid-phrase (the ceiling) or their ending is unsure (`Wait.UNSURE`). A voice that
    does not sound finished waits the ceiling, or only the words endpoint when the words
    read finished and the model is not sure the turn goes on (`sure_incomplete`)."""
    if verdict.complete:
        if words_continue(transcript):
            return Wait.CEILING
        return Wait.UNSURE if unsure_ending(transcript, last_word_probability) else Wait.NONE
    if verdict.probability >= sure_incomplete and words_finished(transcript, last_word_probability):
        return Wait.WORDS
    return Wait.CEILING


def words_finished(transcript: str, last_word_probability: float | None = None) -> bool:
    """Does the transcript read as a finished sentence ("Stop, I have another question.",
    "Paris.")? Whisper ends what it hears as a sentence with its mark; "..." and words that
    stop mid-phrase are not finished, nor is an unsure ending."""
    text = transcript.strip()
    return (
        bool(text)
        and text[-1] in ".?!"
        and not words_continue(text)
        and not unsure_ending(text, last_word_probability)
    )


def words_continue(transcript: str) -> bool:
    """Do these words stop mid-phrase? True for "I'd like a table for", "The thing is, um,",
    "So I was thinking...", "and the?", False for "What are you waiting for?" and "Paris."
    (a question may end with a preposition, never with a conjunction, article or filler)."""
    text = transcript.strip()
    if not text:
        return False
    words = _WORD.findall(text.lower())
    if not words:
        return False
    if text[-1] in "?!":
        return words[-1] in NEVER_LAST_WORDS
    if text.endswith((",", "...", "…", "-", "—", ";", ":")):
        return True
    if words[-1] in PRONOUNS_TOO and text.endswith("."):
        return False
    return words[-1] in DANGLING_WORDS


def unsure_ending(transcript: str, last_word_probability: float | None) -> bool:
    """Words that may or may not be over: a statement whose last word Whisper is unsure of
    and whose words before it stop mid-phrase ("I would like to book a table for it.", "it"
    at 0.4), or a question that ends on a word that usually goes on (`dangling_question`)."""
    text = transcript.strip()
    return dangling_question(text) or (
        last_word_probability is not None
        and last_word_probability < UNSURE_LAST_WORD
        and not text.endswith(("?", "!"))
        and hangs_on_last_word(text)
    )


def dangling_question(transcript: str) -> bool:
    """A question whose last word usually goes on: "Can you tell me the way to?". Whisper
    hears the pitch of a phrase cut short as a question's (4 of 40 cut phrases in
    benchmarks/results/turns/pauses, none of the 40 complete ends); "Who are you talking
    to?" is a whole one, so this only waits `endpoint_unsure_ms`, never the ceiling, when
    the voice sounds finished."""
    text = transcript.strip()
    words = _WORD.findall(text.lower())
    return text.endswith(("?", "!")) and bool(words) and words[-1] in DANGLING_WORDS


def hangs_on_last_word(transcript: str) -> bool:
    """Would these words stop mid-phrase without their last word ("a table for it.")? The
    transcripts whose last word's probability the endpoint needs."""
    before = transcript.strip().rsplit(maxsplit=1)
    return len(before) == 2 and words_continue(before[0])
