"""The barge-in judge: what the words over the agent's voice mean."""

from __future__ import annotations

import pytest

from agent.dialogue.overlap import Overlap as HeardOverlap
from agent.turntaking.barge_in import BargeInSettings, Overlap, is_backchannel, judge

SETTINGS = BargeInSettings(confirm_ms=200, max_ms=900)


@pytest.mark.parametrize(
    "transcript",
    [
        "Mm-hmm.",
        "Uh-huh",
        "Uhuh.",
        "yeah, right",
        "Okay.",
        "",
        "Thank you.",
        "I'm",
        "Haha.",
        "Uh-oh.",
    ],
)
def test_backchannels_however_whisper_spells_them(transcript: str) -> None:
    assert is_backchannel(transcript)


@pytest.mark.parametrize(
    "transcript", ["Stop.", "Wait, wait.", "What about rivers?", "No.", "I'm sorry, what?"]
)
def test_words_that_take_the_turn(transcript: str) -> None:
    assert not is_backchannel(transcript)
    assert judge(SETTINGS, 400, False, transcript) is Overlap.INTERRUPT


def test_no_transcript_yet_waits_and_a_long_overlap_interrupts_whatever_it_says() -> None:
    assert judge(SETTINGS, 400, True, None) is Overlap.WAIT
    assert judge(SETTINGS, 900, True, None) is Overlap.INTERRUPT
    assert judge(SETTINGS, 900, True, "mm-hm") is Overlap.INTERRUPT


def test_a_backchannel_resumes_once_it_is_over() -> None:
    assert judge(SETTINGS, 300, True, "Yeah") is Overlap.WAIT  # "yeah, but ..." may follow
    assert judge(SETTINGS, 300, False, "Yeah.") is Overlap.RESUME


def test_one_word_of_a_sound_still_going_on_is_not_yet_a_verdict() -> None:
    """Whisper on the first 200 ms of "Right." may read "Why?": wait for the whole of it;
    two words of a phrase are enough."""
    assert judge(SETTINGS, 250, True, "Why?") is Overlap.WAIT
    assert judge(SETTINGS, 250, False, "Why?") is Overlap.INTERRUPT
    assert judge(SETTINGS, 250, True, "Wait, I") is Overlap.INTERRUPT


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="barge-in"):
        BargeInSettings(confirm_ms=1000, max_ms=900)


def test_one_echoed_word_resumes_the_agent_only_once_the_sound_is_over() -> None:
    """The agent began "My favorite book" and its echo came back as "my"; a user who starts
    "My question is" says the same first word, so one word is no verdict while it goes on."""
    overlap = HeardOverlap(reply=None, agent_recent="My favorite book")  # type: ignore[arg-type]
    overlap.transcript, overlap.voiced_ms = "my", 300
    overlap.speaking = True
    assert overlap.verdict(SETTINGS) is Overlap.WAIT
    overlap.speaking = False
    overlap.transcript_voiced_ms = 300
    assert overlap.verdict(SETTINGS) is Overlap.RESUME
    overlap.transcript = "Stop."
    assert overlap.verdict(SETTINGS) is Overlap.INTERRUPT
