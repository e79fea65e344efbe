"""Word error rate as benchmarks.stt and tests/test_stt_real.py score it."""

from __future__ import annotations

import pytest

from benchmarks.wer import word_error_rate, word_errors


def test_case_punctuation_and_hyphens_are_not_errors() -> None:
    assert (
        word_error_rate(["Hello, there! A well-known man."], ["hello there a well known man"]) == 0
    )


def test_errors_are_counted_over_the_corpus() -> None:
    errors = word_errors(
        ["Yes.", "What is the capital of Australia?"], ["", "What is the capital on Australia"]
    )
    assert errors.reference_words == 7
    assert (errors.substitutions, errors.deletions, errors.insertions) == (1, 1, 0)
    assert errors.wer == pytest.approx(2 / 7)


def test_mismatched_or_empty_corpora_are_refused() -> None:
    with pytest.raises(ValueError, match="references"):
        word_errors(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no references"):
        word_errors([], [])
