"""The conversation of one session: the user's audio through VAD into utterances, the end of
each user turn, one reply at a time, and the user talking over the agent.

Read top to bottom, the pipeline is: this module (the listener: audio in, VAD events out, and
which of the user's turns each belongs to), agent/dialogue/turn_end.py (is the user's turn
over? speculation and the endpoint), agent/dialogue/replies.py (the reply's lifecycle, one at
a time), agent/dialogue/turn.py (one reply: transcript, LLM, chunks, voice) and
agent/dialogue/overlap.py (the user talking over the agent). agent/dialogue/listening.py holds
what the session hears with and the user's turn ids.

No word is lost: when the user goes on speaking before any of the reply was heard, it is
one user turn. The reply is cancelled without a trace (nothing played, nothing in the
history) and the whole utterance, earlier speech, pause and new speech, is transcribed as
one once the user pauses again. Once part of the reply was heard, the user's speech is a
new turn over the agent (agent/dialogue/overlap.py): its voice is paused at once and the
overlap is judged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from agent.audio import STT_RATE, Int16Array
from agent.config import ConversationConfig
from agent.dialogue.history import ChatHistory
from agent.dialogue.listening import Listening, UserTurns
from agent.dialogue.overlap import OverlapJudge
from agent.dialogue.replies import Replies, Retiring
from agent.dialogue.turn import TurnDeps
from agent.dialogue.turn_end import TurnEnd
from agent.metrics import Metrics
from agent.stages.deadlines import StageRunner
from agent.threads import run_in
from agent.turntaking import barge_in
from agent.turntaking.segmenter import (
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnEvent,
)


class Conversation:
    """An AudioSink: `feed` queues audio; a listener task runs the VAD in a worker thread and
    drives turns. `aclose` cancels and awaits everything it started."""

    def __init__(
        self,
        *,
        config: ConversationConfig,
        listening: Listening,
        deps: TurnDeps,
        metrics: Metrics | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        """`on_fatal(reason)` is called when the conversation cannot go on (too many failed
        turns in a row); the session closes itself then."""
        self._listening = listening
        self._vad = listening.vad
        self._stages = StageRunner(config.stage_timeout_s)
        self.history = ChatHistory(config.full_system_prompt)
        self._audio: asyncio.Queue[tuple[Int16Array, float]] = asyncio.Queue()
        self._turns = UserTurns(deps.emit)
        self._retiring = Retiring()
        """Cancelled tasks whose workers have not returned yet (see `Replies.cancel`)."""
        self._replies = Replies(
            config=config,
            deps=deps,
            history=self.history,
            stages=self._stages,
            retiring=self._retiring,
            metrics=metrics,
            on_fatal=on_fatal,
        )
        self._turn_end = TurnEnd(
            config=config,
            turn_model=listening.turn_model,
            turn_executor=listening.turn_executor,
            turns=self._turns,
            replies=self._replies,
            retiring=self._retiring,
            emit=deps.emit,
            metrics=metrics,
        )
        self._overlap = OverlapJudge(
            vad=listening.vad,
            echo=listening.echo,
            deps=deps,
            history=self.history,
            turns=self._turns,
            settings=barge_in.BargeInSettings(config.barge_in_ms, config.barge_in_max_ms),
            cancel_reply=self._cancel_reply,
            metrics=metrics,
        )
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name="listen")

    # -- AudioSink ----------------------------------------------------------------------

    def feed(self, block: Int16Array, stream_samples: int) -> None:
        self._audio.put_nowait((block, time.time()))

    async def aclose(self) -> None:
        self._listener.cancel()
        await asyncio.gather(self._listener, return_exceptions=True)
        await self._overlap.aclose()
        self._cancel_reply()
        await self._retiring.aclose()
        await self._stages.aclose()

    # -- state --------------------------------------------------------------------------

    @property
    def abandoned_stages(self) -> int:
        """Stage workers given up on at their deadline that have not returned yet."""
        return self._stages.abandoned

    @property
    def busy(self) -> bool:
        return self._replies.busy

    @property
    def semantic(self) -> bool:
        return self._listening.turn_model is not None

    # -- listening ----------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            block, wall = await self._audio.get()
            blocks = [block]
            while not self._audio.empty():  # catch up in one call if the worker fell behind
                block, wall = self._audio.get_nowait()
                blocks.append(block)
            audio = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
            found = await run_in(self._listening.vad_executor, self._vad.feed, audio, wall)
            for event in found:
                await self.handle(event)
            ended = await self._overlap.judge()
            if ended is not None:
                await self._on_end(ended)

    async def handle(self, event: TurnEvent) -> None:
        if isinstance(event, SpeechStarted):
            await self._on_speech(resumed=False)
        elif isinstance(event, SpeechResumed):
            await self._on_speech(resumed=True)
        elif isinstance(event, SpeechPaused):
            await self._on_pause(event)
        elif isinstance(event, SpeechEnded):
            await self._on_end(event)

    async def _on_speech(self, *, resumed: bool) -> None:
        if self._overlap.current is not None:
            # Still the same sound over the agent (after a pause in it): one overlap.
            self._turns.speech_started()
            return
        self._turn_end.cancel_verdict()
        reply = self._replies.current
        if reply is not None and self.busy and self._replies.heard(reply, a_word=resumed):
            # Over the agent's voice: pause it, and judge what this is.
            self._overlap.begin(reply, resumed=resumed)
            self._new_user_turn()
            return
        if reply is not None and self.busy:
            # The user goes on before hearing a word of the reply: one user turn.
            self._discard_reply(merge=not resumed)
            self._turns.speech_started()
            return
        if resumed and self._turns.answered:
            # The reply was heard (and is over): this is the user's next turn.
            self._vad.segmenter.split()
            self._new_user_turn()
            return
        if resumed:
            self._turns.speech_started()
            return
        self._new_user_turn()

    def _new_user_turn(self) -> None:
        self._turn_end.reset()
        self._turns.new()

    async def _on_pause(self, paused: SpeechPaused) -> None:
        if self._overlap.current is not None:
            return
        self._turns.speech_ended(
            paused.speech_ms, False, _samples_ms(paused.decided_sample - paused.end_sample)
        )
        self._turn_end.on_pause(paused)

    async def _on_end(self, ended: SpeechEnded) -> None:
        overlap = self._overlap.current
        if overlap is not None:
            overlap.ended = ended
            return
        self._turns.speech_ended(
            ended.speech_ms, ended.forced, _samples_ms(ended.decided_sample - ended.end_sample)
        )
        self._turn_end.on_end(ended)

    # -- the reply, cancelled -----------------------------------------------------------

    def _discard_reply(self, *, merge: bool) -> None:
        """The user went on before hearing the reply: cancel it and forget it, and the turn
        is open again. `merge`: its utterance is closed, so the next one carries its audio."""
        if self._replies.current is None:
            return
        self._turn_end.cancel_tasks()
        self._turn_end.reopen()
        self._replies.discard(merge=merge)

    def _cancel_reply(self) -> None:
        """Stop the reply at once, with the endpoint's tasks for it: their model workers
        finish in the background (`Retiring`)."""
        self._turn_end.cancel_tasks()
        self._replies.cancel()


def _samples_ms(samples: int) -> float:
    return samples * 1000 / STT_RATE
