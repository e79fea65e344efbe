"""Is the sound over the agent's voice the user taking the turn?

While the agent speaks, a voice onset (the agent's own echo already masked, see
agent/turntaking/echo.py) pauses its audio at once, so a real interruption is heard to stop
within the uplink, a few VAD windows and the downlink. Then the overlap is judged: speech
that goes on for `max_ms` is an interruption whatever it says; before that, once it has
lasted `confirm_ms`, or as soon as it stops, its transcript decides: words that are not
all backchannels ("mm-hm", "yeah", "right") interrupt; no words (a cough, a door, music)
or only backchannels resume the agent exactly where it paused. While the user still
speaks, a backchannel so far ("yeah, but ...") or a single other word is not yet a verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

BACKCHANNELS = frozenset(
    [
        "mm",
        "mmm",
        "hmm",
        "hm",
        "mhm",
        "mm-hm",
        "mm-hmm",
        "uh-huh",
        "uh",
        "huh",
        "uhhuh",
        "ah",
        "oh",
        "ooh",
        "wow",
        "yeah",
        "yea",
        "yep",
        "yup",
        "yes",
        "ya",
        "right",
        "okay",
        "ok",
        "alright",
        "sure",
        "true",
        "exactly",
        "cool",
        "nice",
        "great",
        "good",
        "fine",
        "i",
        "see",
        "got",
        "it",
        "thanks",
        "thank",
        "you",
        "indeed",
        "totally",
        "absolutely",
        "really",
        "i'm",
        "ha",
        "haha",
        "aha",
    ]
)
"""Words a listener says to keep the speaker going (with what Whisper makes of a cough or a
hum: "thank you" and "you" are its usual hallucinations on noise, and a closed-mouth "mm-hm"
came back as "I'm" in the turns benchmark, and "Uh huh." as "haha"; a listener's laugh does not
take the turn either; "I'm sorry, ..." has other words and interrupts)."""
MAX_BACKCHANNEL_WORDS = 4

_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


class Overlap(Enum):
    WAIT = "wait"
    INTERRUPT = "interrupt"
    RESUME = "resume"


@dataclass(frozen=True)
class BargeInSettings:
    confirm_ms: int = 200
    """Voiced overlap after which its transcript is asked for."""
    max_ms: int = 900
    """Voiced overlap that interrupts without waiting for words."""

    def __post_init__(self) -> None:
        if not 0 < self.confirm_ms <= self.max_ms:
            raise ValueError("need 0 < barge-in confirm ms <= barge-in max ms")


_SPELLINGS = frozenset(word.replace("-", "") for word in BACKCHANNELS) | {
    "uhuh",  # Whisper's "uh-huh"
    "mmhmm",
    "mhmm",
    "hmhm",
    "uhhuh",
    "uhoh",  # Whisper's "uh-huh" over the agent's voice ("Uh-oh." in the turns benchmark)
}


def is_backchannel(transcript: str) -> bool:
    """Only words a listener says to keep the speaker going (or nothing at all), however
    Whisper spells them ("Uh-huh.", "Uhuh.", "Mm-hmm")."""
    words = [w.replace("-", "") for w in _WORD.findall(transcript.lower())]
    return len(words) <= MAX_BACKCHANNEL_WORDS and all(w in _SPELLINGS for w in words)


def judge(
    settings: BargeInSettings, voiced_ms: float, speaking: bool, transcript: str | None
) -> Overlap:
    """The overlap's verdict so far. `transcript` is that of the overlap's audio up to now
    (None while it is not ready); `speaking`: the user is still talking."""
    if voiced_ms >= settings.max_ms:
        return Overlap.INTERRUPT
    if transcript is None:
        return Overlap.WAIT
    if not is_backchannel(transcript):
        if speaking and len(_WORD.findall(transcript.lower())) < 2:
            # One word of a sound still going on: Whisper reads a backchannel cut mid-way
            # ("Ri-") as some other word. The agent is paused already, so waiting for the
            # whole of it costs a real interruption nothing at the ear.
            return Overlap.WAIT
        return Overlap.INTERRUPT
    return Overlap.WAIT if speaking else Overlap.RESUME


def wants_transcript(settings: BargeInSettings, voiced_ms: float, speaking: bool) -> bool:
    """Is it time to transcribe the overlap: long enough to tell, or over?"""
    return voiced_ms >= settings.confirm_ms or not speaking
