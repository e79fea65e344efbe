"""The user's sound over the agent's voice. Once part of a reply was heard, the user's speech
is a new turn over the agent: its voice is paused at once and the overlap is judged
(agent/turntaking/barge_in.py) from what was heard of it and what its transcript says so far:
an interruption clears the reply and keeps the heard part in the history; a cough, a
backchannel or the agent's own echo resumes it where it paused."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import events
from agent.audio import OUTPUT_RATE
from agent.dialogue.history import ChatHistory
from agent.dialogue.listening import EchoHold, UserTurns, VadLike
from agent.dialogue.turn import ReplyTurn, TurnDeps
from agent.metrics import Metrics
from agent.stages.stt import Transcript
from agent.turntaking import barge_in
from agent.turntaking.echo import echoes_agent
from agent.turntaking.segmenter import SpeechEnded

log = logging.getLogger(__name__)

ECHO_WORDS = 12
"""The agent's last words an echo can repeat (a round trip is well under a second)."""

ECHO_LOOKAHEAD_SAMPLES = OUTPUT_RATE * 6 // 10
"""Words sent this long (48 kHz samples) past the estimated cut count as said, for the echo
test only: `heard_text` places the cut in proportion to letters, and a first chunk begins
with the voice's near-silence, so an echo can repeat a word or two past it (the agent had
said "One" by that estimate, and the echo was transcribed "One day": a false barge-in)."""


@dataclass
class Overlap:
    reply: ReplyTurn
    """The reply the user talked over (paused meanwhile)."""
    agent_recent: str = ""
    """The last words the agent played before the overlap: what an echo would repeat."""
    transcript: str | None = None
    transcript_voiced_ms: float = 0.0
    """Voiced ms of the overlap that the transcript covers."""
    transcribing: asyncio.Task[Transcript] | None = None
    transcribing_voiced_ms: float = 0.0
    voiced_ms: float = 0.0
    speaking: bool = True
    ended: SpeechEnded | None = field(default=None, repr=False)
    """The overlap's utterance, when the segmenter closed it while it was judged."""

    def needs_transcript(self, settings: barge_in.BargeInSettings) -> bool:
        """Ask for a (fresh) transcript: first when the overlap is long enough to tell or
        over, again when it is over and the last one covered less of it."""
        if self.transcribing is not None and not self.transcribing.done():
            return False
        if self.transcript is None and self.transcribing is None:
            return barge_in.wants_transcript(settings, self.voiced_ms, self.speaking)
        return not self.speaking and self.transcript_voiced_ms < self.voiced_ms

    def take_transcript(self) -> None:
        """Collect a finished transcription (a failed one counts as no words)."""
        task = self.transcribing
        if task is None or not task.done():
            return
        self.transcribing = None
        if task.cancelled():
            return
        error = task.exception()
        self.transcript = "" if error is not None else task.result().text.strip()
        self.transcript_voiced_ms = self.transcribing_voiced_ms

    def verdict(self, settings: barge_in.BargeInSettings) -> barge_in.Overlap:
        transcript = self.transcript
        over = not self.speaking
        if transcript and echoes_agent(transcript, self.agent_recent, sound_over=over):
            return barge_in.Overlap.RESUME  # the agent's own voice, back through the mic
        if transcript is not None and not self.speaking and self.needs_transcript(settings):
            transcript = None  # a fresh one for the whole overlap is on its way
        if self.transcribing is not None and not self.speaking:
            transcript = None
        return barge_in.judge(settings, self.voiced_ms, self.speaking, transcript)


class OverlapJudge:
    """The user over the agent: pauses its voice, judges the overlap as it goes (after each
    block of audio), and then interrupts the reply or resumes it."""

    def __init__(
        self,
        *,
        vad: VadLike,
        echo: EchoHold | None,
        deps: TurnDeps,
        history: ChatHistory,
        turns: UserTurns,
        settings: barge_in.BargeInSettings,
        cancel_reply: Callable[[], None],
        metrics: Metrics | None = None,
    ) -> None:
        """`cancel_reply` stops the reply at once, everything of it (an interruption)."""
        self._vad = vad
        self._echo = echo
        self._deps = deps
        self._history = history
        self._turns = turns
        self._settings = settings
        self._cancel_reply = cancel_reply
        self._metrics = metrics
        self.current: Overlap | None = None
        """The overlap being judged, if any."""

    async def aclose(self) -> None:
        """Cancel and await the overlap's transcription, if one runs (the session ends)."""
        overlap, self.current = self.current, None
        if overlap is not None:
            await _cancel(overlap.transcribing)

    def begin(self, reply: ReplyTurn, *, resumed: bool) -> None:
        """Over the agent's voice: pause it, and judge what this is."""
        if resumed:
            self._vad.segmenter.split()
        self._deps.track.pause()
        if self._echo is not None:
            self._echo.hold()
        sent = self._deps.track.utterance_sent_samples
        played = reply.heard_text(sent).split()
        ahead = reply.heard_text(sent + ECHO_LOOKAHEAD_SAMPLES).split()[len(played) :]
        self.current = Overlap(reply, " ".join(played[-ECHO_WORDS:] + ahead))

    async def judge(self) -> SpeechEnded | None:
        """Judge the overlap so far, and act on the verdict. Returns the user's utterance
        over the agent when it interrupted and the segmenter has closed it: the user's words
        over the agent are their next turn, and they are over."""
        overlap = self.current
        if overlap is None:
            return None
        segmenter = self._vad.segmenter
        if overlap.ended is None:
            overlap.voiced_ms = segmenter.run_speech_ms
            overlap.speaking = segmenter.speaking
        else:
            overlap.speaking = False
        overlap.take_transcript()
        if overlap.needs_transcript(self._settings):
            audio = overlap.ended.audio if overlap.ended else segmenter.utterance_audio()
            overlap.transcribing_voiced_ms = overlap.voiced_ms
            overlap.transcribing = asyncio.get_running_loop().create_task(
                self._deps.transcriber.transcribe(audio), name="overlap-stt"
            )
        verdict = overlap.verdict(self._settings)
        if verdict is not barge_in.Overlap.WAIT:
            log.info(
                "turn %d: sound over the agent judged %s (%.0f ms voiced, %s, words %r, the "
                "agent's last %r)",
                overlap.reply.turn_id,
                verdict.name.lower(),
                overlap.voiced_ms,
                "still speaking" if overlap.speaking else "over",
                overlap.transcript,
                overlap.agent_recent,
            )
        if verdict is barge_in.Overlap.INTERRUPT:
            await self._interrupt(overlap)
            return overlap.ended
        if verdict is barge_in.Overlap.RESUME:
            await self._resume(overlap)
        return None

    async def _interrupt(self, overlap: Overlap) -> None:
        """Barge-in: silence the agent for good, cancel the reply, keep what was heard."""
        self.current = None
        await _cancel(overlap.transcribing)
        reply = overlap.reply
        heard_samples = self._deps.track.clear()
        self._cancel_reply()
        heard = reply.heard_text(heard_samples)
        self._history.add_assistant(heard)
        reply.metrics.interrupted = True
        if self._metrics is not None:
            self._metrics.interruptions.inc()
        self._deps.emit(events.interrupted(reply.turn_id, heard))
        self._deps.emit(reply.metrics.event(reply.turn_id))

    async def _resume(self, overlap: Overlap) -> None:
        """Not the user taking the turn: the agent goes on where it paused."""
        self.current = None
        await _cancel(overlap.transcribing)
        self._deps.track.resume()
        if overlap.ended is None:
            self._vad.segmenter.reset()
        self._turns.speech_ended(overlap.voiced_ms, False)
        self._turns.take_back()
        if self._metrics is not None:
            self._metrics.false_interruptions.inc()
        heard = overlap.reply.heard_text(self._deps.track.utterance_sent_samples)
        self._deps.emit(
            events.interrupted(overlap.reply.turn_id, heard, false_interruption=True, resumed=True)
        )


async def _cancel(task: asyncio.Task[object] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
