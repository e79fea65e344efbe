"""A deterministic byte-level BPE vocabulary (GPT-2 style) of any size, for synthetic models.

Tokens are the 256 byte symbols of GPT-2's byte-to-unicode map, then merged tokens built
from lowercase words and spaces, so English text encodes into multi-byte tokens as with a
real tokenizer. Every merge joins two tokens already in the vocabulary.
"""

from __future__ import annotations

import numpy as np


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


__COMMON_TEXT = (
    "the and you are what how can hello hi yes no thank thanks please is it to of in that "
    "for on with as this be at have do not but we they he she my your me time day good "
    "well okay sure right know think tell about like just so there here today weather"
)
_COMMON = __COMMON_TEXT.split()


def build_bpe(n_tokens: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Return (tokens, merges) with exactly `n_tokens` tokens (>= 256).

    Merges come first from common English words (with and without the leading space
    symbol), then from random pairs of lowercase pieces, deterministically for a seed.
    """
    if n_tokens < 256:
        raise ValueError("a byte-level BPE vocabulary needs at least 256 tokens")
    byte_map = bytes_to_unicode()
    tokens = [byte_map[b] for b in range(256)]
    known = set(tokens)
    merges: list[str] = []
    space = byte_map[ord(" ")]

    def add(left: str, right: str) -> None:
        joined = left + right
        if len(tokens) >= n_tokens or joined in known:
            return
        if left not in known or right not in known:
            return
        tokens.append(joined)
        known.add(joined)
        merges.append(f"{left} {right}")

    # Words, built left to right (every prefix becomes a token, as BPE would learn).
    for word in _COMMON:
        for prefix in ("", space):
            piece = prefix or word[0]
            for ch in word if prefix else word[1:]:
                add(piece, ch)
                piece += ch
    rng = np.random.default_rng(seed)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [space]
    allowed = set(letters) | {chr(c) for c in range(ord("A"), ord("Z") + 1)}
    pool = [t for t in tokens if all(ch in allowed for ch in t)]  # ASCII words only
    attempts = 0
    while len(tokens) < n_tokens:
        attempts += 1
        left = pool[int(rng.integers(len(pool)))]
        right = letters[int(rng.integers(len(letters)))]
        if right == space:
            right, left = left, space
        before = len(tokens)
        add(left, right)
        if len(tokens) > before:
            pool.append(tokens[-1])
        elif attempts > 50 * n_tokens:  # pragma: no cover - cannot happen for sane sizes
            raise RuntimeError("could not build enough BPE merges")
    return tokens, merges
