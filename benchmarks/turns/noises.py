"""Sounds that are not the user taking the turn, synthesized with numpy at 48 kHz: a cough,
mouse clicks, typing, a door, a few seconds of music. Each call takes a `numpy.random.
Generator`, so a seed gives the same corpus every time.

They are made to be heard: peaks around -6 to -12 dBFS, about as loud as the speech of the
corpus, so a case measures what the turn-taking makes of them, not whether they are audible.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from agent.audio import Int16Array

RATE = 48_000

FloatArray = npt.NDArray[np.float64]


def _seconds(duration_s: float) -> FloatArray:
    return np.arange(round(duration_s * RATE), dtype=np.float64) / RATE


def _band(rng: np.random.Generator, duration_s: float, low_hz: float, high_hz: float) -> FloatArray:
    """White noise band-limited to [low_hz, high_hz] in the frequency domain."""
    size = round(duration_s * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size, 1.0 / RATE)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0.0
    band: FloatArray = np.fft.irfft(spectrum, size)
    return band / (np.max(np.abs(band)) or 1.0)


def _to_pcm(signal: FloatArray, peak_dbfs: float) -> Int16Array:
    peak = float(np.max(np.abs(signal))) or 1.0
    scaled = signal / peak * (10 ** (peak_dbfs / 20.0)) * 32767.0
    return np.clip(np.round(scaled), -32768, 32767).astype(np.int16)


def _hum(f0: FloatArray, formants: tuple[tuple[float, float, float], ...]) -> FloatArray:
    """A voiced murmur: the harmonics of a glottal tone following `f0` (Hz per sample), each
    weighted by the resonances (centre Hz, width Hz, gain) of a closed, nasal mouth."""
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    out = np.zeros(f0.size)
    mean_f0 = float(np.mean(f0))
    for harmonic in range(1, int(4_000 / mean_f0)):
        freq = harmonic * mean_f0
        weight = sum(g / (1 + ((freq - c) / w) ** 2) for c, w, g in formants)
        out += weight * np.sin(harmonic * phase) / harmonic**0.5
    return out


NASAL = ((250.0, 120.0, 1.0), (1_100.0, 250.0, 0.08), (2_300.0, 300.0, 0.05))


def mm_hm(rng: np.random.Generator) -> Int16Array:
    """ "Mm-hm" as it is really said, with the mouth closed: a hum falling a little in pitch,
    a breath, and a second hum rising (no voice reads it that way from text)."""
    base = rng.uniform(100.0, 140.0)
    first, second = rng.uniform(0.18, 0.28), rng.uniform(0.22, 0.32)
    t1, t2 = _seconds(first), _seconds(second)
    hum1 = _hum(base * (1.05 - 0.1 * t1 / first), NASAL)
    hum2 = _hum(base * (0.95 + 0.25 * t2 / second), NASAL)
    for hum, t, length in ((hum1, t1, first), (hum2, t2, second)):
        hum *= np.minimum(1.0, t / 0.03) * np.minimum(1.0, (length - t) / 0.05)
    breath = _band(rng, rng.uniform(0.05, 0.09), 500.0, 4_000.0) * 0.08
    breath_peak = float(np.max(np.abs(hum1))) or 1.0
    return _to_pcm(np.concatenate([hum1, breath * breath_peak, hum2]), rng.uniform(-10.0, -6.0))


def cough(rng: np.random.Generator) -> Int16Array:
    """One or two coughs (200-400 ms in all): an explosive burst of breathy noise (300-3,000
    Hz) with a rough voiced part under it, as the vocal folds snap shut, decaying fast."""
    bursts = int(rng.integers(1, 3))
    total = rng.uniform(0.2, 0.4)
    voicing = rng.uniform(0.3, 0.7)
    parts: list[FloatArray] = []
    for index in range(bursts):
        length = total / bursts
        t = _seconds(length)
        envelope = (1.0 - np.exp(-t / 0.006)) * np.exp(-t / (length / 3.5))
        f0 = np.full(t.size, rng.uniform(150.0, 260.0)) * (1 + 0.05 * rng.standard_normal(t.size))
        voiced = _hum(f0, ((600.0, 300.0, 1.0), (1_600.0, 400.0, 0.5)))
        voiced /= np.max(np.abs(voiced)) or 1.0
        burst = (_band(rng, length, 300.0, 3_000.0) + voicing * voiced) * envelope
        parts.append(burst * (0.8 if index else 1.0))
        if index + 1 < bursts:
            parts.append(np.zeros(round(rng.uniform(0.04, 0.08) * RATE)))
    return _to_pcm(np.concatenate(parts), rng.uniform(-9.0, -6.0))


def _tick(rng: np.random.Generator, length_s: float, tone_hz: float) -> FloatArray:
    """A click: a decaying resonance with a noisy edge, a few ms long."""
    t = _seconds(length_s)
    ring = np.sin(2 * np.pi * tone_hz * t) * np.exp(-t / (length_s / 5))
    edge = rng.standard_normal(t.size) * np.exp(-t / 0.0008)
    return ring + 0.6 * edge


def clicks(rng: np.random.Generator) -> Int16Array:
    """Mouse clicks: two to four double clicks (press and release 60-100 ms apart)."""
    signal = np.zeros(round(1.2 * RATE))
    at = 0.05
    for _ in range(int(rng.integers(2, 5))):
        for offset in (0.0, rng.uniform(0.06, 0.1)):
            tick = _tick(rng, 0.004, rng.uniform(2_500, 4_000))
            start = round((at + offset) * RATE)
            signal[start : start + tick.size] += tick[: signal.size - start]
        at += rng.uniform(0.2, 0.3)
    return _to_pcm(signal[: round((at + 0.1) * RATE)], rng.uniform(-10.0, -6.0))


def keyboard(rng: np.random.Generator) -> Int16Array:
    """Typing: 8 to 14 key strokes 80-250 ms apart, each a click with a duller thud."""
    strokes = int(rng.integers(8, 15))
    gaps = rng.uniform(0.08, 0.25, strokes)
    signal = np.zeros(round((float(gaps.sum()) + 0.2) * RATE))
    at = 0.02
    for gap in gaps:
        tick = _tick(rng, 0.012, rng.uniform(1_200, 2_500)) * rng.uniform(0.5, 1.0)
        start = round(at * RATE)
        signal[start : start + tick.size] += tick[: signal.size - start]
        at += float(gap)
    return _to_pcm(signal, rng.uniform(-12.0, -8.0))


def door(rng: np.random.Generator) -> Int16Array:
    """A door shutting: a low thump (50-90 Hz, decaying over ~150 ms) and a short rattle of
    the latch after it."""
    t = _seconds(0.5)
    tone = rng.uniform(50.0, 90.0)
    thump = np.sin(2 * np.pi * tone * t) * np.exp(-t / 0.12)
    thump += 0.5 * _band(rng, 0.5, 20.0, 400.0) * np.exp(-t / 0.05)
    rattle = np.zeros(t.size)
    at = rng.uniform(0.05, 0.1)
    for _ in range(int(rng.integers(3, 7))):
        tick = _tick(rng, 0.015, rng.uniform(800, 1_800)) * rng.uniform(0.2, 0.4)
        start = round(at * RATE)
        rattle[start : start + tick.size] += tick[: t.size - start]
        at += rng.uniform(0.025, 0.05)
    return _to_pcm(thump + rattle, rng.uniform(-8.0, -4.0))


CHORDS = ((261.63, 329.63, 392.0), (349.23, 440.0, 523.25), (392.0, 493.88, 587.33))
"""C, F and G major: the notes of each chord in Hz."""


def music(rng: np.random.Generator) -> Int16Array:
    """Three to four seconds of chords (C, F, G, C...), each note with its harmonics decaying
    like a plucked string, half a second to a second per chord."""
    pieces: list[FloatArray] = []
    length = 0.0
    index = int(rng.integers(0, len(CHORDS)))
    target = rng.uniform(3.0, 4.0)
    while length < target:
        duration = rng.uniform(0.5, 1.0)
        t = _seconds(duration)
        chord = np.zeros(t.size)
        for note in CHORDS[index % len(CHORDS)]:
            for harmonic in range(1, 6):
                chord += np.sin(2 * np.pi * note * harmonic * t) / harmonic**1.5
        attack = 1.0 - np.exp(-t / 0.005)
        pieces.append(chord * attack * np.exp(-t / (duration / 2.0)))
        length += duration
        index += 1
    return _to_pcm(np.concatenate(pieces), rng.uniform(-14.0, -10.0))


NOISES: dict[str, Callable[[np.random.Generator], Int16Array]] = {
    "cough": cough,
    "click": clicks,
    "keyboard": keyboard,
    "door": door,
    "music": music,
}
"""Every noise by name, each at `RATE`."""


__all__ = ["NOISES", "RATE", "clicks", "cough", "door", "keyboard", "mm_hm", "music"]
