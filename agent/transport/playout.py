"""AgentAudioTrack: the agent's voice as a paced, pull-based WebRTC audio track.

aiortc's sender pulls `recv()` and encodes each frame at once, so the only audio queued
below this track is the frame being encoded. Everything not yet sent stays here, where
`clear()` can drop it: an interruption silences the agent within a frame or two.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.audio import (
    OUTPUT_FRAME_SAMPLES,
    OUTPUT_RATE,
    Int16Array,
    pcm_to_frame,
    resample_pcm,
)

TIME_BASE = Fraction(1, OUTPUT_RATE)
MAX_LAG_S = 0.2
"""If the event loop stalled for longer than this, restart the clock instead of bursting."""

FrameListener = Callable[[float], None]
FrameTap = Callable[[Int16Array, float], None]


class AgentAudioTrack(MediaStreamTrack):
    """20 ms frames at 48 kHz, paced by sample count; silence when there is nothing to say.

    Verbs: `write()` queues speech, `clear()` drops it and says how much was heard,
    `pause()` holds it where it is (silence is sent meanwhile) until `resume()`,
    `wait_for_playout()` returns once everything written has been handed to the encoder.
    An utterance is what was written since the last `clear()` or completed playout.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._chunks: collections.deque[Int16Array] = collections.deque()
        self._offset = 0  # samples of _chunks[0] already sent
        self._queued = 0
        self._utterance_sent = 0
        self._pts = 0
        self._start: float | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._paused = False
        self._first_audio_listener: FrameListener | None = None
        self._frame_tap: FrameTap | None = None

    # -- verbs ---------------------------------------------------------------------------

    def write(self, pcm: Int16Array, sample_rate: int) -> int:
        """Queue mono int16 speech at any rate; returns the samples queued at 48 kHz."""
        if self.readyState != "live":
            raise MediaStreamError("track ended")
        audio = resample_pcm(np.asarray(pcm, dtype=np.int16), sample_rate, OUTPUT_RATE)
        if audio.size:
            self._chunks.append(audio)
            self._queued += int(audio.size)
            self._idle.clear()
        return int(audio.size)

    def clear(self) -> int:
        """Drop everything queued. Returns the samples (48 kHz) of the current utterance
        that were actually sent."""
        sent = self._utterance_sent
        self._chunks.clear()
        self._offset = 0
        self._queued = 0
        self._utterance_sent = 0
        self._paused = False
        self._idle.set()
        return sent

    async def wait_for_playout(self) -> int:
        """Wait until everything written has been sent; returns the utterance's samples."""
        await self._idle.wait()
        sent = self._utterance_sent
        self._utterance_sent = 0
        return sent

    def pause(self) -> None:
        """Stop sending speech at the next frame, keeping what is queued and where it was."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def tap(self, listener: FrameTap | None) -> None:
        """`listener(pcm, wall_time)` gets every frame as it is sent, the silence between
        replies and while paused too: the echo mask compares what comes back with it, and
        an echo's onset matches only against the silence that came before it."""
        self._frame_tap = listener

    def drop_first_audio(self, listener: FrameListener) -> None:
        """Forget `listener` if it is still the one waiting (a later turn may have its own)."""
        if self._first_audio_listener == listener:
            self._first_audio_listener = None

    def on_first_audio(self, listener: FrameListener | None) -> None:
        """Call `listener(wall_time)` once, when the next frame carrying speech is sent."""
        self._first_audio_listener = listener

    @property
    def queued_samples(self) -> int:
        return self._queued

    @property
    def utterance_sent_samples(self) -> int:
        return self._utterance_sent

    # -- MediaStreamTrack ----------------------------------------------------------------

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now - self._pts / OUTPUT_RATE
        due = self._start + self._pts / OUTPUT_RATE
        if now - due > MAX_LAG_S:
            self._start = now - self._pts / OUTPUT_RATE
            due = now
        if due > now:
            await asyncio.sleep(due - now)
        if self.readyState != "live":
            raise MediaStreamError

        if self._paused:
            pcm, speech = np.zeros(OUTPUT_FRAME_SAMPLES, dtype=np.int16), 0
        else:
            pcm, speech = self._take(OUTPUT_FRAME_SAMPLES)
        frame = pcm_to_frame(pcm, OUTPUT_RATE, pts=self._pts)
        self._pts += OUTPUT_FRAME_SAMPLES
        now = time.time()
        if self._frame_tap is not None:
            self._frame_tap(pcm, now)
        if speech and self._first_audio_listener is not None:
            listener, self._first_audio_listener = self._first_audio_listener, None
            listener(now)
        return frame

    def _take(self, count: int) -> tuple[Int16Array, int]:
        """Next `count` samples, padded with silence; also how many came from speech."""
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        while filled < count and self._chunks:
            head = self._chunks[0]
            n = min(count - filled, head.size - self._offset)
            out[filled : filled + n] = head[self._offset : self._offset + n]
            filled += n
            self._offset += n
            if self._offset >= head.size:
                self._chunks.popleft()
                self._offset = 0
        self._queued -= filled
        self._utterance_sent += filled
        if not self._chunks:
            self._idle.set()
        return out, filled

    def stop(self) -> None:
        super().stop()
        self._chunks.clear()
        self._queued = 0
        self._idle.set()
