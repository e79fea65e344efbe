"""Where sound starts and stops in a recording: short-window RMS against a threshold that is
both absolute and adaptive, with a minimum duration.

The agent's track sends digital silence between utterances, but what leaves Opus and the
receive path can carry low-level noise (comfort noise, codec residue, dither). A window is
"active" when its level is at or above the threshold, which is the larger of an absolute
floor (`absolute_dbfs`) and the recording's own noise floor plus `margin_db`, capped at
`ceiling_dbfs` so that a recording that is mostly speech cannot push the threshold above
speech. An onset needs `min_active_ms` of mostly active windows; an offset needs `hangover_ms`
of inactive ones, so the pauses between words do not end a segment.

The onset found is refined to the first sample of the window where the level first rises
above the lower edge threshold, so its error is at most one window (`window_ms`, 2.5 ms by
default) on a clean signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.audio import Int16Array

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OnsetSettings:
    window_ms: float = 2.5
    """Length of one analysis window."""
    absolute_dbfs: float = -55.0
    """Never call anything quieter than this sound."""
    margin_db: float = 15.0
    """Above the estimated noise floor."""
    ceiling_dbfs: float = -35.0
    """The adaptive threshold never rises above this."""
    noise_percentile: float = 10.0
    """Percentile of window levels taken as the noise floor."""
    min_active_ms: float = 20.0
    """An onset is a run this long in which most windows are active."""
    active_fraction: float = 0.6
    hangover_ms: float = 150.0
    """Inactive time that ends a segment."""
    edge_db: float = 10.0
    """The onset is refined back to where the level first rose within this of the threshold,
    """
    edge_above_noise_db: float = 6.0
    """but never into what is still the noise floor,"""
    max_edge_ms: float = 40.0
    """nor further back than this."""


DEFAULT = OnsetSettings()


@dataclass(frozen=True)
class Segment:
    start: int
    """First sample of the segment."""
    end: int
    """One past the last active sample (window resolution)."""


def window_levels(pcm: Int16Array, rate: int, window_ms: float) -> tuple[FloatArray, int]:
    """RMS level (dBFS) of consecutive windows, and the window length in samples."""
    size = max(1, round(rate * window_ms / 1000))
    count = pcm.size // size
    if count == 0:
        return np.zeros(0, dtype=np.float64), size
    frames = pcm[: count * size].astype(np.float64).reshape(count, size)
    rms = np.sqrt(np.mean(np.square(frames), axis=1))
    levels: FloatArray = 20.0 * np.log10(np.maximum(rms, 1e-3) / 32768.0)
    return levels, size


def threshold_dbfs(levels: FloatArray, settings: OnsetSettings = DEFAULT) -> float:
    """The activity threshold for a recording with these window levels."""
    if levels.size == 0:
        return settings.absolute_dbfs
    noise = float(np.percentile(levels, settings.noise_percentile))
    adaptive = min(noise + settings.margin_db, settings.ceiling_dbfs)
    return max(settings.absolute_dbfs, adaptive)


def _run_windows(ms: float, window_ms: float) -> int:
    return max(1, round(ms / window_ms))


def find_segments(
    pcm: Int16Array,
    rate: int,
    settings: OnsetSettings = DEFAULT,
    threshold: float | None = None,
) -> list[Segment]:
    """Active segments of `pcm`, in order. `threshold` (dBFS) overrides the adaptive one."""
    levels, size = window_levels(pcm, rate, settings.window_ms)
    if levels.size == 0:
        return []
    level_threshold = threshold_dbfs(levels, settings) if threshold is None else threshold
    active = levels >= level_threshold
    need = _run_windows(settings.min_active_ms, settings.window_ms)
    hang = _run_windows(settings.hangover_ms, settings.window_ms)
    # Fraction of active windows in the `need` windows starting at each index.
    csum = np.concatenate([[0], np.cumsum(active, dtype=np.int64)])
    ahead = np.arange(levels.size)
    stop = np.minimum(ahead + need, levels.size)
    dense = (csum[stop] - csum[ahead]) >= settings.active_fraction * need
    dense_at = active & dense
    noise = float(np.percentile(levels, settings.noise_percentile))
    edge = max(level_threshold - settings.edge_db, noise + settings.edge_above_noise_db)
    max_walk = _run_windows(settings.max_edge_ms, settings.window_ms)

    segments: list[Segment] = []
    active_idx = np.flatnonzero(active)
    if active_idx.size == 0:
        return segments
    # Groups of active windows separated by more than `hang` inactive windows.
    breaks = np.flatnonzero(np.diff(active_idx) > hang) + 1
    for group in np.split(active_idx, breaks):
        starts = group[dense_at[group]]
        if starts.size == 0:
            continue  # clicks and noise bursts too short to be sound
        start = int(starts[0])
        floor = max(segments[-1].end // size if segments else 0, start - max_walk)
        while start > floor and levels[start - 1] >= edge:
            start -= 1
        segments.append(Segment(start * size, (int(group[-1]) + 1) * size))
    return segments


def onset(
    pcm: Int16Array,
    rate: int,
    settings: OnsetSettings = DEFAULT,
    threshold: float | None = None,
) -> int | None:
    """Sample index where sound first starts, or None when the recording stays silent."""
    segments = find_segments(pcm, rate, settings, threshold)
    return segments[0].start if segments else None


def offset_after(
    pcm: Int16Array,
    rate: int,
    after: int,
    settings: OnsetSettings = DEFAULT,
    threshold: float | None = None,
) -> int | None:
    """End of the sound that is playing at sample `after` (or that starts after it): the
    first point past `after` followed by `hangover_ms` of silence. `after` itself when
    nothing is sounding there; None when sound never stops."""
    for segment in find_segments(pcm, rate, settings, threshold):
        if segment.end <= after:
            continue
        if segment.start > after:
            return after
        if segment.end >= pcm.size - round(rate * settings.hangover_ms / 1000):
            return None
        return segment.end
    return after


def speech_bounds(
    pcm: Int16Array, rate: int, settings: OnsetSettings = DEFAULT
) -> tuple[int, int] | None:
    """First and one-past-last active samples of a clip (leading and trailing silence cut),
    or None when it is silent. Used on the user's utterances: `end` is the end of speech."""
    segments = find_segments(pcm, rate, settings)
    if not segments:
        return None
    end = segments[-1].end
    # Refine the end to the sample: the last sample within the window that is loud enough.
    size = max(1, round(rate * settings.window_ms / 1000))
    tail = np.abs(pcm[max(0, end - size) : end].astype(np.int32))
    floor = 32768.0 * 10 ** (settings.absolute_dbfs / 20.0)
    loud = np.flatnonzero(tail >= floor)
    if loud.size:
        end = max(0, end - size) + int(loud[-1]) + 1
    return segments[0].start, end


__all__ = [
    "DEFAULT",
    "OnsetSettings",
    "Segment",
    "find_segments",
    "offset_after",
    "onset",
    "speech_bounds",
    "threshold_dbfs",
    "window_levels",
]
