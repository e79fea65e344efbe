"""The agent's replies in one conversation, one at a time (each one agent/dialogue/turn.py):
started (held or not), released, discarded without a trace, cancelled, and their failures
reported.

A turn whose model stage fails or stalls (agent/stages/deadlines.py) reports an error event
and the conversation keeps listening; after `max_failed_turns` such turns in a row it asks,
through `on_fatal`, for the session to be closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from agent import events
from agent.audio import STT_RATE, Int16Array
from agent.config import ConversationConfig
from agent.dialogue.history import ChatHistory
from agent.dialogue.turn import Outcome, ReplySettings, ReplyTurn, StageError, TurnDeps
from agent.metrics import Metrics
from agent.stages.deadlines import StageRunner, StageTimeout

log = logging.getLogger(__name__)

GAP_BETWEEN_MERGED_UTTERANCES = np.zeros(STT_RATE // 5, dtype=np.int16)
MAX_CARRY_SAMPLES = 300 * STT_RATE
"""Five minutes of a user who never pauses: more is not kept (memory is bounded per session)."""


class Retiring:
    """Cancelled tasks whose workers have not returned yet: owned until they end, so that
    the conversation's `aclose` awaits the rest."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def retire(self, task: asyncio.Task[Any]) -> None:
        """Own a cancelled task until it ends (`aclose` awaits the rest)."""
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Replies:
    """The conversation's reply: at most one at a time, run as one task."""

    def __init__(
        self,
        *,
        config: ConversationConfig,
        deps: TurnDeps,
        history: ChatHistory,
        stages: StageRunner,
        retiring: Retiring,
        metrics: Metrics | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self._deps = deps
        self._history = history
        self._stages = stages
        self._retiring = retiring
        self._metrics = metrics
        self._on_fatal = on_fatal
        self._settings = ReplySettings(
            config.max_reply_sentences, config.max_reply_tokens, config.first_chunk_words
        )
        self._max_failed_turns = config.max_failed_turns
        self._failed_turns = 0
        self.current: ReplyTurn | None = None
        self._task: asyncio.Task[None] | None = None
        self._history_before_reply = history.snapshot()
        self._carry: Int16Array | None = None
        """Audio of a closed utterance whose reply was cancelled unheard: the next
        utterance continues it."""

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def ended(self) -> bool:
        """The reply's task has run to its end: it replied, failed, or heard no words."""
        return self._task is not None and self._task.done()

    def heard(self, reply: ReplyTurn, *, a_word: bool = False) -> bool:
        """Has any of this reply reached the user (`a_word`: a whole word of it)? A user who
        goes on with their sentence needs a word, not a first frame: with a reply ready 700
        ms into a 900 ms pause, the user went on 130 ms after it began, heard nothing of it,
        and their sentence was cut in two turns."""
        sent = self._deps.track.utterance_sent_samples
        if a_word:
            return reply.released and bool(reply.heard_text(sent))
        return reply.released and (sent > 0 or bool(reply.metrics.first_frame_sent_ms))

    def start(
        self,
        audio: Int16Array,
        speech_end_wall: float,
        *,
        turn_id: int,
        held: bool,
        before_decision: bool,
    ) -> None:
        """A reply to the user's turn `turn_id`; `before_decision`: speculative, started
        before the endpoint decided."""
        if self._carry is not None:
            audio = np.concatenate([self._carry, GAP_BETWEEN_MERGED_UTTERANCES, audio])
        reply = ReplyTurn(
            turn_id=turn_id,
            audio=audio,
            speech_end_wall=speech_end_wall,
            history=self._history,
            deps=self._deps,
            stages=self._stages,
            settings=self._settings,
            held=held,
        )
        reply.started_before_decision = before_decision
        self.current = reply
        self._history_before_reply = self._history.snapshot()
        self._task = asyncio.get_running_loop().create_task(
            self._run(reply), name=f"turn-{reply.turn_id}"
        )

    def release(self, reply: ReplyTurn) -> None:
        """The turn is decided: show and play the held reply."""
        self._history_before_reply = self._history.snapshot()
        reply.release()

    def drop_ended(self, reply: ReplyTurn) -> None:
        """A held reply ended before its release (no words in it, or it failed): forget it,
        and report its failure if it failed."""
        self.current = None
        if reply.failure is not None:
            self.report_failure(reply, reply.failure)

    async def _run(self, reply: ReplyTurn) -> None:
        try:
            outcome = await reply.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not reply.released:
                reply.failure = exc  # reported if and when its turn is decided
                return
            self.report_failure(reply, exc)
            return
        self._carry = None
        if outcome is Outcome.NO_SPEECH:
            return
        self._failed_turns = 0
        if self._metrics is not None:
            self._metrics.turns.inc()
            self._metrics.observe_turn(reply.metrics)
        self._deps.emit(reply.metrics.event(reply.turn_id))

    def report_failure(self, reply: ReplyTurn, exc: Exception) -> None:
        self._carry = None
        if isinstance(exc, StageError) and isinstance(exc.cause, StageTimeout):
            log.error("turn %d failed: %s", reply.turn_id, exc)  # no traceback: a stall
        else:
            log.error("turn %d failed", reply.turn_id, exc_info=exc)
        if self._metrics is not None:
            self._metrics.errors.inc()
        self._deps.track.clear()
        message = str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
        self._deps.emit(events.error(message, reply.turn_id))
        if isinstance(exc, StageError):
            self._count_failed_turn(message)

    def _count_failed_turn(self, message: str) -> None:
        self._failed_turns += 1
        limit = self._max_failed_turns
        if limit > 0 and self._failed_turns >= limit and self._on_fatal is not None:
            log.warning("%d turns failed in a row: closing the session", self._failed_turns)
            self._on_fatal(f"{self._failed_turns} turns in a row failed; last: {message}")

    def discard(self, *, merge: bool) -> None:
        """The user went on before hearing the reply: cancel it and forget it (the history
        as it was before it). `merge`: its utterance is closed, so the next one carries its
        audio."""
        reply = self.current
        if reply is None:
            return
        was_speculation = not reply.released
        task = self._task
        self.cancel()
        self._history.restore(self._history_before_reply)
        if merge:
            self._carry = reply.audio[-MAX_CARRY_SAMPLES:]
        if was_speculation:
            if self._metrics is not None:
                self._metrics.speculation.labels(outcome="wasted").inc()
            if task is not None:
                task.add_done_callback(lambda _: self._count_waste(reply))
        else:
            # Its transcript and text were shown: the page takes them back.
            self._deps.emit(events.interrupted(reply.turn_id, ""))

    def _count_waste(self, reply: ReplyTurn) -> None:
        """The worker time a discarded speculation took, once its workers are done."""
        if self._metrics is not None:
            self._metrics.speculation_wasted_seconds.inc(reply.compute_s)

    def cancel(self) -> None:
        """Stop the reply at once: silence, no more events, its task cancelled. Its model
        workers finish in the background (`Retiring`): the listener never waits for a prompt
        being evaluated or a chunk being synthesized, or the user's audio would pile up."""
        if self._task is not None:
            self._task.cancel()
            self._retiring.retire(self._task)
        self._deps.track.clear()
        self._deps.track.on_first_audio(None)
        self._task = None
        self.current = None
