"""What of a reply reached the user: its chunks as they went onto the agent's track, and the
words heard of them when the reply was cut."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SpokenChunk:
    text: str
    samples: int
    """Length on the agent's track, in 48 kHz samples."""
    written_to: int = 0
    """Where the chunk ends in `ReplyTurn.reply_text`, the model's own words."""


def heard_text(spoken: list[SpokenChunk], samples_heard: int) -> str:
    """The text the user actually heard, from the samples the track reports as sent:
    whole chunks, then the words of the interrupted chunk that fit in the share of it
    that was sent (a word takes time in proportion to its letters, roughly)."""
    words: list[str] = []
    remaining = samples_heard
    for chunk in spoken:
        if chunk.samples == 0:
            break  # not on the track yet
        chunk_words = chunk.text.split()
        if remaining >= chunk.samples:
            words.extend(chunk_words)
            remaining -= chunk.samples
            continue
        if remaining > 0:
            words.extend(_words_within(chunk_words, remaining / chunk.samples))
        break
    return " ".join(words)


def _words_within(words: list[str], share: float) -> list[str]:
    """The leading words whose letters (and the space after each) end within `share` of
    the whole."""
    total = sum(len(w) + 1 for w in words)
    kept: list[str] = []
    said = 0
    for word in words:
        said += len(word) + 1
        if said > share * total:
            break
        kept.append(word)
    return kept
