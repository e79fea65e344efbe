"""The cut-window guard on its own: window size, token limit, loops, and when a decode is
redone on the full window. No model (the same decisions run through Whisper in
tests/test_stt_window.py and tests/test_stt_real.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.stages.stt_guard import WindowGuard, repetition, words
from agent.stages.whisper_window import WindowDecode

GUARD = WindowGuard()


def decode(text: str, **changes: object) -> WindowDecode:
    base = WindowDecode(
        text=text,
        language="en",
        language_probability=None,
        no_speech_prob=0.01,
        tokens=len(text.split()) + 1,
        token_limit=40,
        avg_logprob=-0.2,
        frames=1000,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_short_audio_gets_the_minimum_window() -> None:
    assert GUARD.window_frames(80) == round(GUARD.min_window_s * 100)


def test_long_audio_gets_its_length_plus_trailing_silence_in_even_frames() -> None:
    frames = GUARD.window_frames(1501)
    assert frames is not None
    assert frames >= 1501 + GUARD.trailing_pad_s * 100
    assert frames - (1501 + GUARD.trailing_pad_s * 100) < 2
    assert frames % 2 == 0


def test_audio_that_needs_the_full_window_gets_none() -> None:
    assert GUARD.window_frames(2950) is None
    assert GUARD.window_frames(3000) is None
    assert GUARD.window_frames(4000) is None


def test_token_limit_follows_duration_and_is_generous() -> None:
    limits = [GUARD.token_limit(s) for s in (0.0, 0.5, 2.0, 8.0, 15.0)]
    assert limits == sorted(limits)
    assert len(set(limits)) == len(limits)
    assert GUARD.token_limit(0.0) == GUARD.tokens_base
    # about 4 tokens a second cut real questions; the limit leaves twice that and more
    for seconds in (0.5, 2.0, 8.0, 15.0):
        assert GUARD.token_limit(seconds) >= 8 * seconds


@pytest.mark.parametrize(
    ("text", "repeated"),
    [
        ("Paris Paris Paris Paris", "paris"),
        ("And so my fellow Americans. And so my fellow Americans.", "and so my fellow americans"),
        ("Hello? Hello?", "hello"),
        ("Okay, sure Okay, sure", "okay sure"),
        ("No, no, no, that is wrong.", "no"),
    ],
)
def test_loops_are_found(text: str, repeated: str) -> None:
    assert repetition(words(text)) == repeated


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Yes.",
        "Thank you.",
        "It is very very good.",
        "I think it will rain later today.",
        "Yesterday I walked along the river, and on the way back I stopped at the bakery.",
        "The cat saw the dog and the dog saw the cat.",
    ],
)
def test_ordinary_speech_is_not_a_loop(text: str) -> None:
    assert repetition(words(text)) is None


def test_words_ignore_case_and_punctuation() -> None:
    assert words("What's THE time, please?") == ["what's", "the", "time", "please"]


def test_a_good_decode_is_kept() -> None:
    assert GUARD.rejection(decode("What is the capital of Australia?")) is None


def test_a_decode_stopped_by_the_token_limit_is_redone() -> None:
    reason = GUARD.rejection(decode("Yes yes yes yes", tokens=40, token_limit=40))
    assert reason is not None
    assert "token limit" in reason


def test_a_repeating_decode_is_redone() -> None:
    reason = GUARD.rejection(decode("And so my fellow Americans. And so my fellow Americans."))
    assert reason is not None
    assert "repeats" in reason


def test_an_uncertain_language_is_redone_and_a_given_or_sure_one_kept() -> None:
    unsure = decode("Paris", language="ja", language_probability=0.3)
    sure = decode("Paris", language="en", language_probability=0.9)
    reason = GUARD.rejection(unsure)
    assert reason is not None
    assert "language" in reason
    assert GUARD.rejection(sure) is None
    assert GUARD.rejection(decode("Paris")) is None  # language given


def test_hit_token_limit_is_the_limit_reached() -> None:
    assert decode("x", tokens=12, token_limit=12).hit_token_limit
    assert not decode("x", tokens=11, token_limit=12).hit_token_limit
