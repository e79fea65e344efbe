"""The bench's energy onset/offset detector on synthetic signals with known onsets."""

from __future__ import annotations

import numpy as np
import pytest

from agent.audio import Int16Array
from benchmarks import onset

RATE = 48_000
TOLERANCE = round(0.010 * RATE)  # 10 ms


def noise(seconds: float, dbfs: float, seed: int = 0) -> Int16Array:
    rng = np.random.default_rng(seed)
    level = 32768 * 10 ** (dbfs / 20)
    return np.clip(rng.standard_normal(round(seconds * RATE)) * level, -32768, 32767).astype(
        np.int16
    )


def voice(seconds: float, dbfs: float = -20.0, ramp_s: float = 0.0, seed: int = 1) -> Int16Array:
    """Speech-like: a 150 Hz buzz with harmonics, modulated at a syllable rate."""
    t = np.arange(round(seconds * RATE)) / RATE
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    syllables = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    signal = buzz * syllables
    signal *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(signal**2))
    if ramp_s:
        ramp = np.minimum(t / ramp_s, 1.0)
        signal *= ramp
    return np.clip(signal, -32768, 32767).astype(np.int16)


def mix(*parts: Int16Array) -> Int16Array:
    return np.concatenate(parts)


def assert_near(found: int | None, expected: int) -> None:
    assert found is not None
    assert abs(found - expected) <= TOLERANCE, f"{(found - expected) / RATE * 1000:.1f} ms off"


def test_onset_after_digital_silence() -> None:
    pcm = mix(np.zeros(round(0.7 * RATE), np.int16), voice(0.5))
    assert_near(onset.onset(pcm, RATE), round(0.7 * RATE))


@pytest.mark.parametrize("noise_dbfs", [-80.0, -65.0, -50.0, -42.0])
def test_onset_above_comfort_noise(noise_dbfs: float) -> None:
    start = round(1.234 * RATE)
    background = noise(2.0, noise_dbfs)
    speech = voice(0.6, dbfs=-22.0)
    pcm = background.astype(np.int32)
    pcm[start : start + speech.size] += speech
    pcm16 = np.clip(pcm, -32768, 32767).astype(np.int16)
    assert_near(onset.onset(pcm16, RATE), start)


def test_onset_of_a_fade_in_is_at_its_start() -> None:
    start = round(0.5 * RATE)
    pcm = mix(noise(0.5, -70.0), voice(0.5, ramp_s=0.02))
    assert_near(onset.onset(pcm, RATE), start)


def test_quiet_voice_is_still_found() -> None:
    start = round(0.3 * RATE)
    pcm = mix(np.zeros(start, np.int16), voice(0.5, dbfs=-40.0))
    assert_near(onset.onset(pcm, RATE), start)


def test_clicks_are_not_onsets() -> None:
    pcm = np.zeros(RATE, np.int16)
    for at in (0.1, 0.25, 0.4):
        pcm[round(at * RATE) : round(at * RATE) + 48] = 20000  # 1 ms clicks
    pcm[round(0.6 * RATE) : round(0.6 * RATE) + round(0.3 * RATE)] = voice(0.3)
    assert_near(onset.onset(pcm, RATE), round(0.6 * RATE))


def test_silence_and_noise_alone_have_no_onset() -> None:
    assert onset.onset(np.zeros(RATE, np.int16), RATE) is None
    assert onset.onset(noise(1.0, -70.0), RATE) is None
    assert onset.onset(np.zeros(10, np.int16), RATE) is None


def test_explicit_threshold() -> None:
    pcm = mix(np.zeros(RATE // 2, np.int16), voice(0.3, dbfs=-30.0))
    assert onset.onset(pcm, RATE, threshold=-20.0) is None
    assert_near(onset.onset(pcm, RATE, threshold=-45.0), RATE // 2)


def test_segments_bridge_short_pauses() -> None:
    pcm = mix(
        np.zeros(RATE // 5, np.int16),
        voice(0.4),
        np.zeros(round(0.1 * RATE), np.int16),  # a pause between words
        voice(0.4),
        np.zeros(RATE // 2, np.int16),  # the end of the utterance
        voice(0.3),
    )
    segments = onset.find_segments(pcm, RATE)
    assert len(segments) == 2
    assert_near(segments[0].start, RATE // 5)
    assert_near(segments[0].end, round(1.1 * RATE))
    assert_near(segments[1].start, round(1.6 * RATE))


def test_offset_after_a_cut() -> None:
    cut = round(1.3 * RATE)
    pcm = mix(noise(0.3, -70.0, seed=3), voice(1.0), noise(0.8, -70.0, seed=4))
    found = onset.offset_after(pcm, RATE, after=round(0.8 * RATE))
    assert_near(found, cut)
    # Nothing sounding at `after`: silent already.
    assert onset.offset_after(pcm, RATE, after=round(1.8 * RATE)) == round(1.8 * RATE)
    # Still sounding at the end of the recording: never fell silent.
    assert onset.offset_after(pcm[: round(1.2 * RATE)], RATE, after=round(0.8 * RATE)) is None


def test_speech_bounds_trim_leading_and_trailing_silence() -> None:
    pcm = mix(np.zeros(2205, np.int16), voice(1.0), np.zeros(6615, np.int16))
    bounds = onset.speech_bounds(pcm, RATE)
    assert bounds is not None
    assert_near(bounds[0], 2205)
    assert_near(bounds[1], 2205 + RATE)
    assert onset.speech_bounds(np.zeros(RATE, np.int16), RATE) is None
