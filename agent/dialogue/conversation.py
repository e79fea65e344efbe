"""The conversation of one session: the user's audio through VAD into turns, one reply turn
at a time, and barge-in when the user talks over the agent.

States, from the user's point of view: listening (nothing happening), user speaking,
thinking (a turn runs, no audio yet), speaking (agent audio playing). The agent is "busy"
while a turn task exists; user speech of `barge_in_ms` while it is busy cancels that task.

A turn whose model stage fails or stalls (agent/stages/deadlines.py) reports an error event and the
conversation keeps listening; after `max_failed_turns` such turns in a row it asks, through
`on_fatal`, for the session to be closed. Barge-in and no-speech turns count neither way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agent import events
from agent.audio import STT_RATE, Int16Array
from agent.config import ConversationConfig
from agent.dialogue.history import ChatHistory
from agent.dialogue.turn import Outcome, ReplyTurn, StageError, TurnDeps
from agent.metrics import Metrics
from agent.stages.deadlines import StageRunner, StageTimeout
from agent.threads import run_in
from agent.turntaking.vad import SpeechEnded, SpeechStarted, TurnEvent

log = logging.getLogger(__name__)

GAP_BETWEEN_MERGED_UTTERANCES = np.zeros(STT_RATE // 5, dtype=np.int16)


class VadLike(Protocol):
    def feed(self, block: Int16Array, wall_time: float) -> list[TurnEvent]: ...

    @property
    def speech_ms(self) -> float: ...


@dataclass
class _Interruption:
    turn_id: int
    heard: str


class Conversation:
    """An AudioSink: `feed` queues audio; a listener task runs the VAD in a worker thread and
    drives turns. `aclose` cancels and awaits everything it started."""

    def __init__(
        self,
        *,
        config: ConversationConfig,
        vad: VadLike,
        vad_executor: Executor,
        deps: TurnDeps,
        metrics: Metrics | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        """`on_fatal(reason)` is called when the conversation cannot go on (too many failed
        turns in a row); the session closes itself then."""
        self._config = config
        self._vad = vad
        self._vad_executor = vad_executor
        self._deps = deps
        self._metrics = metrics
        self._on_fatal = on_fatal
        self._stages = StageRunner(config.stage_timeout_s)
        self._failed_turns = 0
        self.history = ChatHistory(config.full_system_prompt)
        self._audio: asyncio.Queue[tuple[Int16Array, float]] = asyncio.Queue()
        self._turn: ReplyTurn | None = None
        self._turn_task: asyncio.Task[None] | None = None
        self._turn_ids = 0
        self._user_turn_id = 0
        self._interruption: _Interruption | None = None
        self._carry_audio: Int16Array | None = None
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name="listen")

    # -- AudioSink ----------------------------------------------------------------------

    def feed(self, block: Int16Array, stream_samples: int) -> None:
        self._audio.put_nowait((block, time.time()))

    async def aclose(self) -> None:
        self._listener.cancel()
        await asyncio.gather(self._listener, return_exceptions=True)
        await self._cancel_turn()
        await self._stages.aclose()

    # -- listening ----------------------------------------------------------------------

    @property
    def abandoned_stages(self) -> int:
        """Stage workers given up on at their deadline that have not returned yet."""
        return self._stages.abandoned

    @property
    def busy(self) -> bool:
        return self._turn_task is not None and not self._turn_task.done()

    async def _listen(self) -> None:
        while True:
            block, wall = await self._audio.get()
            blocks = [block]
            while not self._audio.empty():  # catch up in one call if the worker fell behind
                block, wall = self._audio.get_nowait()
                blocks.append(block)
            audio = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
            for event in await run_in(self._vad_executor, self._vad.feed, audio, wall):
                await self.handle(event)
            await self.check_barge_in(self._vad.speech_ms)

    async def handle(self, event: TurnEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._user_turn_id = self._turn_ids + 1
            self._deps.emit(events.user_speech_start(self._user_turn_id))
        elif isinstance(event, SpeechEnded):
            await self._on_speech_ended(event)

    async def check_barge_in(self, speech_ms: float) -> None:
        if self.busy and speech_ms >= self._config.barge_in_ms:
            await self.interrupt()

    async def _on_speech_ended(self, ended: SpeechEnded) -> None:
        self._deps.emit(events.user_speech_end(self._user_turn_id, ended.speech_ms, ended.forced))
        if self.busy:
            # Too short to interrupt (a cough, an "mm-hm" under the agent): keep talking.
            return
        audio = ended.audio
        if self._carry_audio is not None:
            audio = np.concatenate([self._carry_audio, GAP_BETWEEN_MERGED_UTTERANCES, audio])
            self._carry_audio = None
        lag_s = (ended.decided_sample - ended.end_sample) / STT_RATE
        speech_end_wall = ended.wall_time - lag_s
        self._turn_ids += 1
        turn = ReplyTurn(
            turn_id=self._turn_ids,
            audio=audio,
            speech_end_wall=speech_end_wall,
            history=self.history,
            deps=self._deps,
            stages=self._stages,
        )
        turn.metrics.endpoint_ms = (ended.wall_time - speech_end_wall) * 1000
        self._turn = turn
        self._turn_task = asyncio.get_running_loop().create_task(
            self._run_turn(turn), name=f"turn-{turn.turn_id}"
        )

    async def _run_turn(self, turn: ReplyTurn) -> None:
        interruption, self._interruption = self._interruption, None
        try:
            outcome = await turn.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, StageError) and isinstance(exc.cause, StageTimeout):
                log.error("turn %d failed: %s", turn.turn_id, exc)  # no traceback: a stall
            else:
                log.exception("turn %d failed", turn.turn_id)
            if self._metrics is not None:
                self._metrics.errors.inc()
            self._deps.track.clear()
            message = str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
            self._deps.emit(events.error(message, turn.turn_id))
            if isinstance(exc, StageError):
                self._count_failed_turn(message)
            return
        if outcome is Outcome.NO_SPEECH:
            if interruption is not None:
                # The sound that stopped the agent was not a turn after all.
                self._deps.emit(
                    events.interrupted(
                        interruption.turn_id, interruption.heard, false_interruption=True
                    )
                )
            return
        self._failed_turns = 0
        if self._metrics is not None:
            self._metrics.turns.inc()
            self._metrics.observe_turn(turn.metrics)
        self._deps.emit(turn.metrics.event(turn.turn_id))

    def _count_failed_turn(self, message: str) -> None:
        self._failed_turns += 1
        limit = self._config.max_failed_turns
        if limit > 0 and self._failed_turns >= limit and self._on_fatal is not None:
            log.warning("%d turns failed in a row: closing the session", self._failed_turns)
            self._on_fatal(f"{self._failed_turns} turns in a row failed; last: {message}")

    async def interrupt(self) -> None:
        """Barge-in: silence the agent now, then cancel the turn and cut the history to what
        the user heard."""
        turn, task = self._turn, self._turn_task
        if turn is None or task is None or task.done():
            return
        heard_samples = self._deps.track.clear()
        await self._cancel_turn()
        heard = turn.heard_text(heard_samples)
        if turn.transcript is None:
            # Interrupted before its transcript existed: the user was still talking, so the
            # next utterance continues this one.
            self._carry_audio = turn.audio
        elif heard:
            self.history.add_assistant(heard)
        turn.metrics.interrupted = True
        self._interruption = _Interruption(turn.turn_id, heard)
        if self._metrics is not None:
            self._metrics.interruptions.inc()
        self._deps.emit(events.interrupted(turn.turn_id, heard))

    async def _cancel_turn(self) -> None:
        task = self._turn_task
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._deps.track.clear()
        self._turn_task = None
