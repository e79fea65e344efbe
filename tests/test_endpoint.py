"""The endpoint policy's reading of words: which transcripts stop mid-phrase."""

from __future__ import annotations

import pytest

from agent.turntaking.endpoint import (
    UNSURE_LAST_WORD,
    EndpointPolicy,
    Verdict,
    Wait,
    dangling_question,
    hangs_on_last_word,
    unsure_ending,
    wait_after_pause,
    words_continue,
    words_finished,
)


@pytest.mark.parametrize(
    "transcript",
    [
        "I'd like to book a table for",
        "I would like to book a table for. For people at 8 to",
        "The thing is, um,",
        "So I was thinking...",
        "and the?",
        "Milk, eggs, bread and",
        "I think that",
        "I would like this...",
        "I need",
    ],
)
def test_words_that_stop_mid_phrase_continue(transcript: str) -> None:
    if transcript == "I need":
        # A verb can end a sentence; only the listed words hold the turn.
        assert not words_continue(transcript)
        return
    assert words_continue(transcript)
    assert not words_finished(transcript)


@pytest.mark.parametrize(
    "transcript",
    [
        "Paris.",
        "What time is it in Tokyo?",
        "Four people at 8 to 9.",
        "It costs 20.",
        "No.",
        "Stop, I have another question.",
        "Yes, let us do that.",
        "I am not really sure about those.",
    ],
)
def test_finished_sentences_are_finished(transcript: str) -> None:
    """A number as the last word ends a sentence: Whisper writes "eight" as "8"."""
    assert not words_continue(transcript)
    assert words_finished(transcript)


def test_no_words_are_neither_finished_nor_continuing() -> None:
    assert not words_finished("")
    assert not words_continue("   ")
    assert not words_finished("I'd like a table")  # no sentence mark yet


def test_policy_threshold() -> None:
    policy = EndpointPolicy(0.5)
    assert policy.judge(0.5).complete
    assert not policy.judge(0.49).complete
    with pytest.raises(ValueError, match="threshold"):
        EndpointPolicy(1.0)


def test_a_last_word_whisper_is_unsure_of_is_an_unsure_ending() -> None:
    """Whisper heard "I would like to book a table for" and a pause as "... for it.", "it"
    at 0.4: the words before it stop mid-phrase."""
    made_up = "I would like to book a table for it."
    assert hangs_on_last_word(made_up)
    assert not words_continue(made_up)
    assert words_finished(made_up)  # unscored: as before
    assert unsure_ending(made_up, 0.4)
    assert not words_finished(made_up, 0.4)
    assert not unsure_ending(made_up, UNSURE_LAST_WORD)  # sure enough: it is the end
    # A question is not: Whisper heard one.
    assert not unsure_ending("How far is the moon from the Earth?", 0.39)
    # Words before the unsure last one that end a sentence: finished.
    assert not hangs_on_last_word("The weather is nice today.")
    assert words_finished("The weather is nice today.", 0.3)
    # One word: nothing before it to decide.
    assert not hangs_on_last_word("Paris.")
    assert words_finished("Paris.", 0.2)


def test_a_question_that_ends_on_a_word_that_goes_on_is_an_unsure_ending() -> None:
    """Whisper heard "Can you tell me the way to" and a pause as a question (Smart Turn
    0.77 at it): not finished, so neither the prosody nor the words end it at once; "What
    are you waiting for?" ends the same way, so it waits `endpoint_unsure_ms`, no longer."""
    for cut in ("Can you tell me the way to?", "What is the best way to?"):
        assert dangling_question(cut) and unsure_ending(cut, None)
        assert not words_continue(cut) and not words_finished(cut)
    assert dangling_question("What are you waiting for?")
    assert not dangling_question("What is the capital of France?")
    assert not dangling_question("I'd like to book a table for")  # not a question: it continues


@pytest.mark.parametrize(
    ("probability", "transcript", "last_word", "wait"),
    [
        (0.9, "What is the capital of France?", 0.9, Wait.NONE),
        (0.9, "I would like to book a table for it.", 0.4, Wait.UNSURE),
        (0.9, "Can you tell me the way to?", None, Wait.UNSURE),
        (0.9, "I'd like to book a table for", None, Wait.CEILING),
        (0.3, "Play some relaxing music, please.", 0.9, Wait.WORDS),
        (0.3, "I would like to book a table for it.", 0.4, Wait.CEILING),
        (0.02, "Why is the sky blue?", 0.9, Wait.CEILING),
    ],
)
def test_the_wait_at_a_pause_tells_finished_words_from_an_unsure_ending(
    probability: float, transcript: str, last_word: float | None, wait: Wait
) -> None:
    """Words that read finished under a voice that did not (`endpoint_words_ms`) are not
    the same wait as a voice that sounded done over an unsure ending (`endpoint_unsure_ms`,
    longer: the words may be Whisper's)."""
    verdict = Verdict(probability >= 0.5, probability)
    assert wait_after_pause(verdict, transcript, last_word) is wait
