"""What reached the client's ear: the agent's audio as a timeline of wall times, and where
in it the agent's voice starts."""

from __future__ import annotations

import bisect

import numpy as np

from agent.audio import OUTPUT_RATE, Int16Array
from benchmarks import onset
from benchmarks.peer import AgentClient, ReceivedAudio


class Timeline:
    """Recently received agent audio as one array, with sample <-> wall-time mapping."""

    def __init__(self, received: ReceivedAudio, since: float) -> None:
        first = max(0, bisect.bisect_left(received.arrival, since) - 1)
        chunks = received.chunks[first:]
        self.arrival = np.asarray(received.arrival[first : first + len(chunks)], dtype=np.float64)
        chunks = chunks[: self.arrival.size]
        sizes = np.asarray([c.size for c in chunks], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        self.pcm: Int16Array = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def wall(self, index: int) -> float:
        """When sample `index` reached the ear: its frame's pull time plus its place in it."""
        chunk = int(np.searchsorted(self.starts, index, side="right")) - 1
        chunk = min(max(chunk, 0), self.arrival.size - 1)
        return float(self.arrival[chunk] + (index - self.starts[chunk]) / OUTPUT_RATE)

    def index_at(self, wall: float) -> int:
        """First sample heard at or after `wall`."""
        chunk = int(np.searchsorted(self.arrival, wall, side="right")) - 1
        if chunk < 0:
            return 0
        offset = int(np.ceil((wall - self.arrival[chunk]) * OUTPUT_RATE - 1e-6))
        return int(min(self.starts[chunk] + offset, self.starts[chunk + 1]))


def quiet_threshold(timeline: Timeline, start: float, end: float) -> float:
    """Activity threshold from a stretch where the agent is known to be quiet."""
    quiet = timeline.pcm[timeline.index_at(start) : timeline.index_at(end)]
    levels, _ = onset.window_levels(quiet, OUTPUT_RATE, onset.DEFAULT.window_ms)
    settings = onset.OnsetSettings(noise_percentile=90.0)
    return onset.threshold_dbfs(levels, settings)


def agent_onset_after(client: AgentClient, quiet_from: float, after: float) -> float | None:
    """Wall time of the agent's first sound after `after`, or None."""
    timeline = Timeline(client.received, quiet_from)
    threshold = quiet_threshold(timeline, quiet_from, after)
    start = timeline.index_at(after)
    found = onset.onset(timeline.pcm[start:], OUTPUT_RATE, threshold=threshold)
    return None if found is None else timeline.wall(start + found)


__all__ = ["Timeline", "agent_onset_after", "quiet_threshold"]
