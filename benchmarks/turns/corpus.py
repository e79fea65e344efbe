"""The labelled turn-taking corpus, made at run time: every case knows by construction what
the agent should do with it.

- `complete`: a finished utterance (a question, a statement, a one-word answer): the agent
  should answer, soon after the end of speech.
- `incomplete`: an utterance in two parts joined by a silence of 200 to 1,500 ms, the first
  part ending mid-phrase, on a filler, inside a list or on a trailing filler: the agent must
  not answer in the pause, and must answer the whole once it is over.
- `noise`, `echo`, `backchannel`: the user asks something that makes the agent talk, and
  about a second into its answer a cough, clicks, typing, a door or music is heard (`noise`),
  the agent's own voice comes back through the microphone at -20 to -35 dB (`echo`, the
  whole reply long), or the user says "mm-hm", "yeah", "right" (`backchannel`): the agent
  must not stop.
- `interruption`: the same, but the user cuts in with "Stop.", "Wait, wait." or a new
  question: the agent must stop, and hear it.

Voices: Piper joe (a neural voice, the `small` set's) and espeak-ng voices at several rates;
the cases whose words are scored use Piper and the clearest espeak voices, where Whisper's
own error rate is lowest (`benchmarks/results/stt`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from agent.audio import Int16Array
from agent.stages.tts import Synthesizer
from benchmarks.corpus import LEAD_S, TAIL_S, Utterance, espeak_clip, make_utterance
from benchmarks.onset import speech_bounds
from benchmarks.turns import noises

CATEGORIES = ("complete", "incomplete", "noise", "echo", "backchannel", "interruption")
OVER_THE_AGENT = ("noise", "echo", "backchannel", "interruption")
"""Categories played while the agent speaks."""

T = TypeVar("T")

PAUSES_MS = (200, 500, 800, 1200, 1500)

COMPLETE: dict[str, tuple[str, ...]] = {
    "question": (
        "What is the capital of France?",
        "How far away is the moon?",
        "Can you recommend a good book?",
        "Who painted the Mona Lisa?",
        "How do I make a cup of tea?",
        "Is it going to rain tomorrow?",
        "Why is the sky blue?",
        "What time is it in Tokyo?",
    ),
    "short": ("Yeah.", "No.", "Paris.", "Sure.", "Okay.", "Thanks.", "Tomorrow.", "Yes, please."),
    "statement": (
        "I just got back from a long walk.",
        "My favourite colour is green.",
        "I think I will go to bed early tonight.",
        "The train was late again this morning.",
        "I would like to learn how to cook.",
        "We are going to the beach on Saturday.",
    ),
}

INCOMPLETE: dict[str, tuple[tuple[str, str], ...]] = {
    "midphrase": (
        # Not "four people at eight": Whisper writes numbers as digits.
        ("I'd like to book a table for", "my parents and me tonight."),
        ("Can you tell me the way to", "the nearest train station?"),
        ("I was wondering if you could", "help me plan a trip."),
        ("My brother wants to", "buy a new car this year."),
        ("What is the best way to", "learn a new language?"),
    ),
    "filler": (
        ("The thing is, um,", "I lost my keys again."),
        ("So, uh,", "what should I cook for dinner?"),
        ("I think, um,", "we should leave at noon."),
        ("Well, er,", "I am not sure about that."),
    ),
    "list": (
        ("I need eggs, milk,", "and bread from the shop."),
        ("We visited Paris, Rome,", "and Madrid last summer."),
        ("Please add apples, pears,", "and grapes to the list."),
    ),
    "trailing": (
        ("I was going to say that, um", "the meeting moved to Friday."),
        ("Tell me about, uh", "the history of chess."),
        ("Can you find me, uh", "a good restaurant nearby?"),
    ),
}

PROMPTS = (
    "Tell me a story about a dragon.",
    "Can you tell me about the history of Rome?",
    "Explain how airplanes fly.",
    "What do you know about the ocean?",
    "Tell me about your favourite book.",
    "Describe a day in the life of a farmer.",
)
"""Questions that make the agent talk for several seconds, for the cases played over it."""

BACKCHANNELS: tuple[tuple[str, str | None], ...] = (
    # (script, as the voices are given it). Every voice reads "mm-hm" letter by letter or as
    # another word, so it is a hum made by `noises.mm_hm` (None), the closed-mouth way it
    # is said; and "uh-huh" is written the way both voices say it.
    ("mm-hm", None),
    ("yeah", "Yeah."),
    ("right", "Right."),
    ("uh-huh", "Uh huh."),
    ("okay", "Okay."),
)
HUM = "numpy:hum"

INTERRUPTIONS: dict[str, tuple[str, ...]] = {
    "short": ("Stop.", "Stop, please."),
    "question": (
        "What is the capital of Japan?",
        "Actually, can you tell me a joke instead?",
        "Sorry, how cold is it outside today?",
    ),
    "medium": ("Wait, wait.", "Hold on a second."),
}

NOISE_KINDS = ("cough", "door", "keyboard", "click", "music")
ECHO_GAINS_DB = (-20.0, -25.0, -30.0, -35.0)
ECHO_DELAYS_MS = (50.0, 100.0, 150.0)

PIPER = "piper:joe"
CLEAR_VOICES = (PIPER, "espeak:en-gb+f2:140", "espeak:en-us:160")
"""Where Whisper base makes the fewest errors of its own (benchmarks/results/stt: WER 1.6 %,
2.2 % and 5.1 %): for the cases whose words are scored, and the questions before a sound."""
ALL_VOICES = (*CLEAR_VOICES, "espeak:en-us+m3:185", "espeak:en-gb:150", "espeak:en-us+f3:175")


@dataclass(frozen=True)
class Echo:
    delay_ms: float
    """Extra delay of the feedback, on top of the receive path."""
    gain_db: float


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    kind: str
    speaker: str
    utterance: Utterance
    """What the user says first: the turn itself, or the question the agent answers while
    the stimulus is played over it."""
    script: str
    """The words the server should end up with from the user (empty where there are none
    to hear): the utterance, or the interruption."""
    pauses: tuple[tuple[float, float], ...] = ()
    """(start, end) in seconds of `utterance.pcm`: silences inside an unfinished utterance."""
    stimulus: Utterance | None = None
    """Played over the agent, `stimulus_after_s` after its voice reached the client."""
    stimulus_after_s: float = 0.0
    stimulus_speaker: str = ""
    echo: Echo | None = None

    @property
    def pause_ms(self) -> int | None:
        return round(sum(e - s for s, e in self.pauses) * 1000) if self.pauses else None

    def label(self) -> dict[str, object]:
        """What the report keeps of the case (no audio)."""
        stimulus = self.stimulus
        return {
            "name": self.name,
            "category": self.category,
            "kind": self.kind,
            "speaker": self.speaker,
            "text": self.utterance.text,
            "script": self.script,
            "duration_s": round(self.utterance.duration_s, 3),
            "speech_end_s": round(self.utterance.speech_end_s, 3),
            "pauses": [[round(s, 3), round(e, 3)] for s, e in self.pauses],
            "pause_ms": self.pause_ms,
            "stimulus": None if stimulus is None else stimulus.text,
            "stimulus_speaker": self.stimulus_speaker or None,
            "stimulus_s": None if stimulus is None else round(stimulus.duration_s, 3),
            "stimulus_after_s": self.stimulus_after_s if stimulus is not None else None,
            "echo": None if self.echo is None else vars(self.echo),
        }


class Voices:
    """Speech from a speaker name: "piper:joe" or "espeak:VOICE:RATE"; each clip is cut to its
    speech (no silence before or after). Without a Piper voice, espeak-ng speakers only."""

    def __init__(self, piper: Synthesizer | None) -> None:
        self._piper = piper

    def speak(self, speaker: str, text: str) -> tuple[Int16Array, int]:
        if speaker == PIPER:
            if self._piper is None:
                raise ValueError(f"no Piper voice to speak {text!r}")
            pcm, rate = self._piper.synthesize(text), self._piper.sample_rate
            bounds = speech_bounds(pcm, rate)
            if bounds is None:
                raise RuntimeError(f"Piper made no sound for {text!r}")
            return pcm[bounds[0] : bounds[1]], rate
        engine, voice, speed = speaker.split(":")
        if engine != "espeak":
            raise ValueError(f"unknown speaker {speaker!r}")
        return espeak_clip(text, voice, int(speed))

    def utterance(
        self, name: str, speaker: str, parts: Sequence[str], pause_ms: int = 0
    ) -> tuple[Utterance, tuple[tuple[float, float], ...]]:
        """The parts spoken one after the other with `pause_ms` of silence between them, with
        LEAD_S of silence before and TAIL_S after; and where the pauses are (seconds)."""
        clips = [self.speak(speaker, part) for part in parts]
        rate = clips[0][1]
        if any(r != rate for _, r in clips):
            raise ValueError(f"{speaker}: clips of one utterance at different rates")
        pieces: list[Int16Array] = [np.zeros(round(LEAD_S * rate), dtype=np.int16)]
        pauses: list[tuple[float, float]] = []
        at = pieces[0].size
        for index, (clip, _) in enumerate(clips):
            if index:
                gap = np.zeros(round(pause_ms / 1000 * rate), dtype=np.int16)
                pauses.append((at / rate, (at + gap.size) / rate))
                pieces.append(gap)
                at += gap.size
            pieces.append(clip)
            at += clip.size
        pieces.append(np.zeros(round(TAIL_S * rate), dtype=np.int16))
        text = " ".join(parts)
        return make_utterance(name, np.concatenate(pieces), rate, text), tuple(pauses)


def sound(name: str, pcm: Int16Array, rate: int) -> Utterance:
    """A noise as an utterance: its bounds are its first and last non-silent samples (a click
    is too short for the speech detector's minimum length)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 32)
    if loud.size == 0:
        raise ValueError(f"noise {name!r} is silent")
    lead = np.zeros(round(LEAD_S * rate), dtype=np.int16)
    padded = np.concatenate([lead, pcm, np.zeros(round(TAIL_S * rate), dtype=np.int16)])
    return Utterance(name, padded, rate, lead.size + int(loud[0]), lead.size + int(loud[-1]) + 1)


def _pick(kinds: Sequence[T], index: int) -> tuple[T, int, int]:
    """Kinds in turn, so that a few cases already cover each: (kind, its round, a turn to
    rotate other choices by). The turn, the kind's place plus its round, takes every value
    within each kind, whatever the lengths of the lists rotated: rotating by the case index
    instead would tie a voice or a pause to a kind when the lengths share a factor."""
    place = index % len(kinds)
    round_ = index // len(kinds)
    return kinds[place], round_, place + round_


Builder = Callable[[Voices, int, random.Random], Case]


def complete_case(voices: Voices, index: int, rng: random.Random) -> Case:
    kind, round_, turn = _pick(list(COMPLETE), index)
    texts = COMPLETE[kind]
    text = texts[round_ % len(texts)]
    speaker = ALL_VOICES[turn % len(ALL_VOICES)]
    name = f"complete-{index:03d}-{kind}"
    utterance, _ = voices.utterance(name, speaker, [text])
    return Case(name, "complete", kind, speaker, utterance, text)


def incomplete_case(voices: Voices, index: int, rng: random.Random) -> Case:
    kind, round_, turn = _pick(list(INCOMPLETE), index)
    pairs = INCOMPLETE[kind]
    first, second = pairs[round_ % len(pairs)]
    pause_ms = PAUSES_MS[turn % len(PAUSES_MS)]
    speaker = CLEAR_VOICES[(turn + round_) % len(CLEAR_VOICES)]
    name = f"incomplete-{index:03d}-{kind}-{pause_ms}ms"
    utterance, pauses = voices.utterance(name, speaker, [first, second], pause_ms)
    return Case(name, "incomplete", kind, speaker, utterance, utterance.text, pauses)


def _prompt(voices: Voices, name: str, turn: int, rng: random.Random) -> tuple[str, Utterance]:
    speaker = CLEAR_VOICES[turn % len(CLEAR_VOICES)]
    text = PROMPTS[(turn + rng.randrange(len(PROMPTS))) % len(PROMPTS)]
    return speaker, voices.utterance(name, speaker, [text])[0]


def noise_case(voices: Voices, index: int, rng: random.Random) -> Case:
    kind, _, turn = _pick(NOISE_KINDS, index)
    name = f"noise-{index:03d}-{kind}"
    speaker, prompt = _prompt(voices, name, turn, rng)
    pcm = noises.NOISES[kind](np.random.default_rng(rng.randrange(2**32)))
    stimulus = sound(kind, pcm, noises.RATE)
    after = round(rng.uniform(0.8, 1.2), 2)
    return Case(name, "noise", kind, speaker, prompt, "", stimulus=stimulus, stimulus_after_s=after)


def echo_case(voices: Voices, index: int, rng: random.Random) -> Case:
    gain, _, turn = _pick(ECHO_GAINS_DB, index)
    delay = ECHO_DELAYS_MS[turn % len(ECHO_DELAYS_MS)]
    name = f"echo-{index:03d}-{-gain:.0f}dB-{delay:.0f}ms"
    speaker, prompt = _prompt(voices, name, turn, rng)
    return Case(name, "echo", f"{-gain:.0f}dB", speaker, prompt, "", echo=Echo(delay, gain))


def backchannel_case(voices: Voices, index: int, rng: random.Random) -> Case:
    script, _, turn = _pick([script for script, _ in BACKCHANNELS], index)
    said = dict(BACKCHANNELS)[script]
    name = f"backchannel-{index:03d}-{script}"
    speaker, prompt = _prompt(voices, name, turn, rng)
    if said is None:
        voice = HUM
        stimulus = sound(
            script, noises.mm_hm(np.random.default_rng(rng.randrange(2**32))), noises.RATE
        )
    else:
        voice = ALL_VOICES[turn % len(ALL_VOICES)]
        stimulus = voices.utterance(script, voice, [said])[0]
    after = round(rng.uniform(0.8, 1.2), 2)
    return Case(
        name, "backchannel", script, speaker, prompt, "",
        stimulus=stimulus, stimulus_after_s=after, stimulus_speaker=voice,
    )  # fmt: skip


def interruption_case(voices: Voices, index: int, rng: random.Random) -> Case:
    kind, round_, turn = _pick(list(INTERRUPTIONS), index)
    texts = INTERRUPTIONS[kind]
    text = texts[round_ % len(texts)]
    name = f"interruption-{index:03d}-{kind}"
    speaker, prompt = _prompt(voices, name, turn, rng)
    voice = CLEAR_VOICES[(turn + round_ + 1) % len(CLEAR_VOICES)]
    stimulus, _ = voices.utterance(text, voice, [text])
    after = round(rng.uniform(0.5, 1.0), 2)
    return Case(
        name, "interruption", kind, speaker, prompt, text,
        stimulus=stimulus, stimulus_after_s=after, stimulus_speaker=voice,
    )  # fmt: skip


BUILDERS: dict[str, Builder] = {
    "complete": complete_case,
    "incomplete": incomplete_case,
    "noise": noise_case,
    "echo": echo_case,
    "backchannel": backchannel_case,
    "interruption": interruption_case,
}


def build_corpus(
    voices: Voices, per_category: int, seed: int = 0, categories: Sequence[str] = CATEGORIES
) -> list[Case]:
    """`per_category` cases of each category, in a seeded random order (so that a slow
    stretch of the machine falls on every category alike)."""
    unknown = set(categories) - set(BUILDERS)
    if unknown:
        raise ValueError(f"unknown categories: {sorted(unknown)}")
    rng = random.Random(seed)
    cases = [
        BUILDERS[category](voices, index, rng)
        for category in categories
        for index in range(per_category)
    ]
    rng.shuffle(cases)
    return cases


__all__ = [
    "CATEGORIES",
    "OVER_THE_AGENT",
    "PAUSES_MS",
    "Case",
    "Echo",
    "Voices",
    "build_corpus",
    "sound",
]
