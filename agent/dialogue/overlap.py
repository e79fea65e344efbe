"""The user's sound over the agent's voice, while it is being judged (agent/turntaking/
barge_in.py): what was heard of it and what its transcript says so far."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agent.dialogue.turn import ReplyTurn
from agent.stages.stt import Transcript
from agent.turntaking import barge_in
from agent.turntaking.echo import echoes_agent
from agent.turntaking.segmenter import SpeechEnded


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
        if self.transcript and echoes_agent(self.transcript, self.agent_recent):
            return barge_in.Overlap.RESUME  # the agent's own voice, back through the mic
        transcript = self.transcript
        if transcript is not None and not self.speaking and self.needs_transcript(settings):
            transcript = None  # a fresh one for the whole overlap is on its way
        if self.transcribing is not None and not self.speaking:
            transcript = None
        return barge_in.judge(settings, self.voiced_ms, self.speaking, transcript)
