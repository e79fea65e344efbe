"""When Whisper may decode on a window cut to the utterance, and when its answer must not be
trusted (then the utterance is transcribed again on the full 30 s window). Pure: no model.

Whisper was trained on 30 s windows. Cut to a short utterance and a little silence, it
sometimes repeats the utterance ("Paris Paris Paris ...", "And so my fellow Americans. And
so my fellow Americans."): the guard gives the window a minimum length and trailing silence,
stops the decode at a token limit that follows the audio's duration, and rejects a decode
that hit the limit or repeats itself."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from agent.stages.whisper_window import FRAMES_PER_SECOND, FULL_WINDOW_FRAMES, WindowDecode


@dataclass(frozen=True)
class WindowGuard:
    min_window_s: float = 10.0
    """Shorter windows make Whisper loop on short answers: on a corpus of 48 clips (Whisper
    base), windows of at least 5 s looped or repeated on 9, of 8 and 10 s on none; from 10 s
    the language detected agreed with the full window's on short clips."""
    trailing_pad_s: float = 1.0
    """Silence the window holds after the audio, at least."""
    tokens_base: int = 16
    tokens_per_second: float = 10.0
    """The token limit: base + rate x audio seconds. Generous (English speech takes 3 to 5
    tokens a second; a limit of about 4 a second cut real questions): hitting it costs a
    second decode, a loop running to Whisper's 224 tokens costs more."""
    min_repeated_words: int = 2
    """A span of this many words said twice in a row is taken for a loop."""
    language_probability: float = 0.5
    """Detected on a cut window below this probability, the language is checked on the full
    window (short windows mistake the language more often)."""

    def window_frames(self, content_frames: int) -> int | None:
        """Feature frames for a cut window holding `content_frames` of audio, even (the
        encoder halves them), or None when the audio and its padding need the full window."""
        frames = max(
            content_frames + math.ceil(self.trailing_pad_s * FRAMES_PER_SECOND),
            math.ceil(self.min_window_s * FRAMES_PER_SECOND),
        )
        frames += frames % 2
        return frames if frames < FULL_WINDOW_FRAMES else None

    def token_limit(self, audio_s: float) -> int:
        return self.tokens_base + math.ceil(self.tokens_per_second * max(0.0, audio_s))

    def rejection(self, decode: WindowDecode) -> str | None:
        """Why this cut-window decode must be redone on the full window, or None to keep it."""
        if decode.hit_token_limit:
            return f"hit the token limit ({decode.token_limit})"
        probability = decode.language_probability
        if probability is not None and probability < self.language_probability:
            return f"language {decode.language!r} uncertain ({probability:.2f})"
        repeated = repetition(words(decode.text), self.min_repeated_words)
        if repeated is not None:
            return f"repeats {repeated!r}"
        return None


_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    """Lower-case words, punctuation aside."""
    return _WORD.findall(text.lower())


def repetition(tokens: list[str], min_span: int = 2) -> str | None:
    """The repeated part when `tokens` look like a decoding loop, else None: the whole text
    is one part said two or more times ("hello hello"), or a span of at least `min_span`
    words comes twice in a row, or any span three times in a row ("no no no"). A person may
    say these too: the cost of a false alarm is a second decode, not a wrong transcript."""
    n = len(tokens)
    for size in range(1, n // 2 + 1):
        if n % size == 0 and tokens == tokens[:size] * (n // size):
            return " ".join(tokens[:size])
    for size in range(1, n // 2 + 1):
        for start in range(n - 2 * size + 1):
            span = tokens[start : start + size]
            if tokens[start + size : start + 2 * size] != span:
                continue
            if size >= min_span or tokens[start + 2 * size : start + 3 * size] == span:
                return " ".join(span)
    return None


__all__ = ["WindowGuard", "repetition", "words"]
