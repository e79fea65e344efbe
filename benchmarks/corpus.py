"""The user's side of a benchmark: utterances read from WAV files, or a default corpus made
with espeak-ng (questions and statements, 1 to 6 s, some with a pause mid-sentence).

Every utterance knows where its speech starts and ends (`benchmarks.onset.speech_bounds`):
the end of speech, not the end of the file, is what mouth-to-ear is measured from."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.audio import Int16Array
from benchmarks.onset import speech_bounds

PAUSE_S = 0.22
"""Silence inside a two-part utterance: shorter than the server's default 300 ms endpoint,
long enough to tempt an eager endpointer (espeak's own comma pause is about 190 ms)."""
LEAD_S = 0.1
TAIL_S = 0.2
"""Silence kept before and after the speech of each generated clip."""

# (text, voice, speed). A "|" marks a pause made by joining two clips with PAUSE_S of silence.
DEFAULT_TEXTS: tuple[tuple[str, str, int], ...] = (
    ("Hello, can you hear me?", "en-us", 160),
    ("What time is it in Tokyo right now?", "en-us", 170),
    ("Tell me a short joke.", "en-gb", 160),
    ("I would like to book a table for two tonight.", "en-us", 165),
    ("How far is the moon from the earth?", "en-gb", 155),
    ("My favourite colour is green.", "en-us", 150),
    ("Can you recommend a good book | about the history of science?", "en-us", 165),
    ("Yes, let us do that.", "en-us", 140),
    ("Thanks, that was really helpful.", "en-gb", 165),
    ("What's the weather going to be like tomorrow in Paris?", "en-us", 175),
    ("Remind me to call my sister | when I get home this evening.", "en-gb", 165),
    ("Why is the sky blue?", "en-us", 150),
    ("I have been learning to play the piano for about three years now.", "en-us", 175),
    ("Could you explain, in simple words, how a refrigerator works?", "en-gb", 160),
    ("Set a timer for ten minutes.", "en-us", 160),
    ("So I was thinking | maybe we could go hiking on Saturday.", "en-us", 160),
    ("What is the capital of Australia?", "en-gb", 160),
    ("No, that is not what I meant.", "en-us", 165),
    ("How many cups of flour do I need | for a loaf of bread?", "en-gb", 160),
    ("The train was late again this morning, so I missed the meeting.", "en-us", 170),
    ("Can you translate good morning into Spanish?", "en-us", 160),
    ("Well, | I am not really sure about that.", "en-gb", 155),
    ("Play some relaxing music, please.", "en-us", 160),
    ("Who wrote the novel Pride and Prejudice?", "en-gb", 165),
    (
        "I need a recipe for dinner tonight | that uses chicken, rice, "
        "and whatever is left in the fridge.",
        "en-us",
        165,
    ),
)


@dataclass(frozen=True)
class Utterance:
    name: str
    pcm: Int16Array
    rate: int
    speech_start: int
    """First sample of speech."""
    speech_end: int
    """One past the last sample of speech: the end of the user's turn."""
    text: str = ""

    @property
    def duration_s(self) -> float:
        return self.pcm.size / self.rate

    @property
    def speech_end_s(self) -> float:
        return self.speech_end / self.rate

    @property
    def speech_start_s(self) -> float:
        return self.speech_start / self.rate

    @property
    def has_pause(self) -> bool:
        return "|" in self.text


def make_utterance(name: str, pcm: Int16Array, rate: int, text: str = "") -> Utterance:
    bounds = speech_bounds(pcm, rate)
    if bounds is None:
        raise ValueError(f"utterance {name!r} holds no speech")
    return Utterance(name, pcm, rate, bounds[0], bounds[1], text)


def read_wav(path: Path) -> tuple[Int16Array, int]:
    """Mono 16-bit PCM of a WAV file (stereo is averaged)."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        channels, rate = f.getnchannels(), f.getframerate()
        data = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data.copy(), rate


def write_wav(path: Path, pcm: Int16Array, rate: int) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.ascontiguousarray(pcm, dtype=np.int16).tobytes())


def load_directory(directory: Path) -> list[Utterance]:
    """Every `*.wav` in `directory`, sorted by name."""
    paths = sorted(Path(directory).glob("*.wav"))
    if not paths:
        raise ValueError(f"no .wav files in {directory}")
    utterances = []
    for path in paths:
        pcm, rate = read_wav(path)
        text_file = path.with_suffix(".txt")
        text = text_file.read_text(encoding="utf-8").strip() if text_file.exists() else ""
        utterances.append(make_utterance(path.stem, pcm, rate, text))
    return utterances


def espeak(text: str, *, voice: str | None = None, speed: int = 160) -> tuple[Int16Array, int]:
    """`text` spoken by espeak-ng as it makes it: (mono int16 PCM, sample rate)."""
    executable = shutil.which("espeak-ng")
    if executable is None:
        raise RuntimeError(
            "espeak-ng is not installed (apt-get install espeak-ng); it speaks the default "
            "corpus (the bench takes recordings with --utterances DIR instead) and the tests"
        )
    with tempfile.TemporaryDirectory(prefix="voice-agent-espeak-") as tmp:
        wav = Path(tmp) / "speech.wav"
        voice_args = ["-v", voice] if voice else []
        subprocess.run(
            [executable, *voice_args, "-s", str(speed), "-w", str(wav), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return read_wav(wav)


def espeak_clip(text: str, voice: str, speed: int) -> tuple[Int16Array, int]:
    """One espeak-ng clip, with its leading and trailing silence cut."""
    pcm, rate = espeak(text, voice=voice, speed=speed)
    bounds = speech_bounds(pcm, rate)
    if bounds is None:
        raise RuntimeError(f"espeak-ng made no sound for {text!r}")
    return pcm[bounds[0] : bounds[1]], rate


def synthesize_utterance(name: str, text: str, voice: str, speed: int) -> Utterance:
    parts = [p.strip() for p in text.split("|")]
    clips = [espeak_clip(p, voice, speed) for p in parts]
    rate = clips[0][1]
    pause = np.zeros(round(PAUSE_S * rate), dtype=np.int16)
    speech: list[Int16Array] = []
    for i, (clip, _) in enumerate(clips):
        if i:
            speech.append(pause)
        speech.append(clip)
    pcm = np.concatenate(
        [
            np.zeros(round(LEAD_S * rate), dtype=np.int16),
            *speech,
            np.zeros(round(TAIL_S * rate), dtype=np.int16),
        ]
    )
    return make_utterance(name, pcm, rate, text)


def default_corpus(
    cache_dir: Path | None = None, texts: tuple[tuple[str, str, int], ...] = DEFAULT_TEXTS
) -> list[Utterance]:
    """The default utterances, written as WAV files (with a `.txt` of their text) into
    `cache_dir` when given, so a run can be repeated with `--utterances cache_dir`."""
    utterances = [
        synthesize_utterance(f"{index + 1:02d}", text, voice, speed)
        for index, (text, voice, speed) in enumerate(texts)
    ]
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for utterance in utterances:
            write_wav(cache_dir / f"{utterance.name}.wav", utterance.pcm, utterance.rate)
            (cache_dir / f"{utterance.name}.txt").write_text(utterance.text + "\n", "utf-8")
    return utterances


__all__ = [
    "DEFAULT_TEXTS",
    "Utterance",
    "default_corpus",
    "espeak",
    "load_directory",
    "make_utterance",
    "read_wav",
    "write_wav",
]
