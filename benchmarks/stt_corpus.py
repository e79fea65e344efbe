"""The speech recognition corpus: sentences with their true text, spoken by espeak-ng (several
voices and rates) and by a Piper voice, cut as the VAD hands an utterance to Whisper.

Short answers ("Yes.", "Paris."), questions and statements of 2 to 5 s, and long ones of
7 to 15 s. No numbers (Whisper writes digits) and no word with a British and an American
spelling, so that an error is a recognition error. Each sentence is spoken by two espeak-ng
voices and by the Piper voice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.audio import STT_RATE, Int16Array, resample_pcm
from agent.stages.tts import Synthesizer
from benchmarks.corpus import espeak_clip
from benchmarks.onset import speech_bounds

PREROLL_S = 0.3
"""Silence before the speech: the VAD's pre-roll (`VadSettings.preroll_ms`)."""
TRAILING_S = 0.1
"""Silence after it: the VAD's trailing audio (`VadSettings.trailing_ms`)."""

SENTENCES: tuple[str, ...] = (
    # short
    "Yes.",
    "No.",
    "Paris.",
    "Hello.",
    "Thank you.",
    "Okay, sure.",
    "Why not?",
    "Good morning.",
    # questions and statements of a few seconds
    "What is the capital of Australia?",
    "Can you set a timer for the pasta?",
    "How far is the moon from the earth?",
    "Who wrote the novel Pride and Prejudice?",
    "Where is the nearest train station?",
    "Please turn off the lights in the kitchen.",
    "I think it will rain later today.",
    "My sister lives in a small town near the sea.",
    "And so my fellow Americans, ask not what your country can do for you.",
    "Could you tell me a short story about a brave little mouse?",
    "Is it going to be sunny tomorrow afternoon?",
    "I forgot my keys at the office again.",
    "Which planet is the closest to the sun?",
    "Let us meet in front of the library after class.",
    # long: 7 to 15 s
    "Yesterday I walked along the river for almost two hours, and on the way back I "
    "stopped at a small bakery that sells the best bread in town.",
    "Could you explain to me, in simple words and without too much detail, how a "
    "refrigerator keeps food cold even on a very hot summer day?",
    "I would like to book a table for the whole family on Friday evening, preferably near "
    "the window, because my parents are coming to visit and they love the view.",
    "When you have a moment, can you remind me what we decided about the garden, and "
    "whether we still need to buy new seeds before the weekend?",
    "The meeting was moved to the afternoon, so I will have time to finish the report in "
    "the morning and send it to the whole team before lunch.",
    "What is the difference between a crocodile and an alligator, and which one of them "
    "lives in the rivers of South America?",
    "Last summer we drove all the way along the coast, stopping in every little village we "
    "passed, eating fresh fish by the water, and sleeping in a tent under the stars almost "
    "every night.",
    "Before you go to the shop, could you check whether we still have milk, eggs and butter "
    "in the fridge, and if we do not, please buy some, along with a loaf of bread and a few "
    "apples for the children?",
)

ESPEAK_VOICES: tuple[tuple[str, int], ...] = (
    ("en-us", 160),
    ("en-gb", 150),
    ("en-us+f3", 175),
    ("en-gb-x-rp", 165),
    ("en-us+m3", 185),
    ("en-gb+f2", 140),
)
"""(espeak-ng voice, words per minute): sentence i is spoken by voices i and i + 3."""
VOICE_STEP = 3


@dataclass(frozen=True)
class Clip:
    name: str
    text: str
    speaker: str
    """"espeak:VOICE:RATE" or "piper:VOICE"."""
    audio: Int16Array
    """16 kHz mono, the speech with the VAD's pre-roll and trailing silence."""

    @property
    def duration_s(self) -> float:
        return self.audio.size / STT_RATE


def as_utterance(pcm: Int16Array, rate: int) -> Int16Array:
    """16 kHz speech with the silence around it as the VAD would leave it."""
    pcm = resample_pcm(pcm, rate, STT_RATE)
    bounds = speech_bounds(pcm, STT_RATE)
    if bounds is None:
        raise ValueError("the clip holds no speech")
    speech = pcm[bounds[0] : bounds[1]]
    before = np.zeros(round(PREROLL_S * STT_RATE), dtype=np.int16)
    after = np.zeros(round(TRAILING_S * STT_RATE), dtype=np.int16)
    return np.concatenate([before, speech, after])


def espeak_clips(sentences: tuple[str, ...] = SENTENCES) -> list[Clip]:
    clips = []
    for index, text in enumerate(sentences):
        for offset in range(0, len(ESPEAK_VOICES), VOICE_STEP):
            voice, rate = ESPEAK_VOICES[(index + offset) % len(ESPEAK_VOICES)]
            pcm, sample_rate = espeak_clip(text, voice, rate)
            clips.append(
                Clip(
                    f"espeak-{index:02d}-{voice}",
                    text,
                    f"espeak:{voice}:{rate}",
                    as_utterance(pcm, sample_rate),
                )
            )
    return clips


def voice_clips(tts: Synthesizer, name: str, sentences: tuple[str, ...] = SENTENCES) -> list[Clip]:
    return [
        Clip(
            f"{name}-{index:02d}",
            text,
            f"piper:{name}",
            as_utterance(tts.synthesize(text), tts.sample_rate),
        )
        for index, text in enumerate(sentences)
    ]


__all__ = ["ESPEAK_VOICES", "SENTENCES", "Clip", "as_utterance", "espeak_clips", "voice_clips"]
