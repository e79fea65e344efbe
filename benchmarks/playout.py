"""What a loudspeaker would make of the agent's audio as this client receives it.

The client pulls 20 ms frames from aiortc's jitter buffer as they come. A sound card plays
them at a fixed rate: it starts with the first frame of a reply and wants the next one every
20 ms after. A frame that comes later than it is wanted is an underrun: the listener hears
a gap (or a browser's concealment) for as long as it is late, and the card's clock slips by
that much. Counting them is what keeps a thinner jitter buffer honest: a lower mouth-to-ear
bought with broken audio shows here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FRAME_S = 0.02


@dataclass(frozen=True)
class Playout:
    frames: int
    underruns: int
    """Frames that came after the sound card wanted them."""
    concealed_ms: float
    """Total time the sound card had nothing to play."""


def playout(arrivals: Sequence[float], *, slack_s: float = 0.0) -> Playout:
    """Play frames that arrived at wall times `arrivals` (in order), starting when the first
    came, with `slack_s` of device buffer."""
    if not arrivals:
        return Playout(0, 0, 0.0)
    clock = arrivals[0] + slack_s
    underruns = 0
    concealed = 0.0
    for index, arrived in enumerate(arrivals):
        wanted = clock + index * FRAME_S
        if arrived > wanted + 1e-4:
            underruns += 1
            concealed += arrived - wanted
            clock += arrived - wanted
    return Playout(len(arrivals), underruns, round(concealed * 1000, 1))
