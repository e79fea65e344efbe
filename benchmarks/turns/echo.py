"""A microphone that hears the loudspeaker: the agent's voice, as this client received it,
fed back into its own microphone track, delayed and attenuated, as a room without an echo
canceller (or with a poor one) would. What the client plays on purpose is mixed on top.
"""

from __future__ import annotations

import collections

import av
import numpy as np

from agent.audio import OUTPUT_RATE, pcm_to_frame
from benchmarks.peer import MIC_FRAME, MIC_RATE, MicrophoneTrack, ReceivedAudio

MAX_BACKLOG_S = 0.5
"""Feedback queued beyond its delay (the receive side ran ahead in a burst) is dropped past
this, so the delay stays what was asked."""


class EchoMicrophone(MicrophoneTrack):
    """`MicrophoneTrack` plus the agent's received audio `delay_ms` later at `gain_db`."""

    def __init__(self, delay_ms: float, gain_db: float) -> None:
        super().__init__()
        if MIC_RATE != OUTPUT_RATE:
            raise ValueError("the feedback needs the microphone at the output rate")
        self.delay_ms = delay_ms
        self.gain_db = gain_db
        self._gain = 10 ** (gain_db / 20.0)
        self._received: ReceivedAudio | None = None
        self._taken = 0
        """Chunks of `_received` already queued as feedback."""
        self._delay_samples = round(delay_ms / 1000 * MIC_RATE)
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0
        self.fed_back_samples = 0

    def listen_to(self, received: ReceivedAudio) -> None:
        """Start feeding back what arrives in `received` from now on."""
        self._received = received
        self._taken = len(received.chunks)
        self._queue.clear()
        self._queue.append(np.zeros(self._delay_samples, dtype=np.float64))
        self._queued = self._delay_samples

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        if self._received is None:
            return frame
        chunks = self._received.chunks
        for chunk in chunks[self._taken :]:
            self._queue.append(chunk.astype(np.float64) * self._gain)
            self._queued += chunk.size
        self._taken = len(chunks)
        while self._queued > self._delay_samples + MAX_BACKLOG_S * MIC_RATE and self._queue:
            self._queued -= self._queue.popleft().size
        echo = self._take(MIC_FRAME)
        if not np.any(echo):
            return frame
        own = frame.to_ndarray().reshape(-1).astype(np.float64)
        mixed = np.clip(np.round(own + echo), -32768, 32767).astype(np.int16)
        self.fed_back_samples += MIC_FRAME
        out = pcm_to_frame(mixed, MIC_RATE, pts=frame.pts)
        return out

    def _take(self, count: int) -> np.ndarray:
        out = np.zeros(count, dtype=np.float64)
        filled = 0
        while filled < count and self._queue:
            head = self._queue[0]
            n = min(count - filled, head.size)
            out[filled : filled + n] = head[:n]
            filled += n
            if n == head.size:
                self._queue.popleft()
            else:
                self._queue[0] = head[n:]
        self._queued -= filled
        return out


__all__ = ["EchoMicrophone"]
