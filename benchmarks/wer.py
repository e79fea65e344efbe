"""Word error rate (jiwer) over a corpus, case and punctuation aside: "Hello, there!" and
"hello there" are the same words; a hyphen separates words as a space does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jiwer

NORMALISE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.SubstituteRegexes({r"[-–—]": " "}),
        jiwer.RemovePunctuation(),  # type: ignore[no-untyped-call]
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


@dataclass(frozen=True)
class WordErrors:
    wer: float
    """(substitutions + deletions + insertions) / reference words, over the whole corpus."""
    reference_words: int
    substitutions: int
    deletions: int
    insertions: int


def word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> WordErrors:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no references to score against")
    out = jiwer.process_words(
        list(references),
        list(hypotheses),
        reference_transform=NORMALISE,
        hypothesis_transform=NORMALISE,
    )
    return WordErrors(
        wer=float(out.wer),
        reference_words=out.hits + out.substitutions + out.deletions,
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
    )


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    return word_errors(references, hypotheses).wer


__all__ = ["NORMALISE", "WordErrors", "word_error_rate", "word_errors"]
