"""The end of the user's turn (agent/turntaking/endpoint.py): a pause of `pause_ms` asks
Smart Turn and, at the same moment, starts the reply *held* (speculation): transcript, first
clause and its audio are prepared while the endpoint decides. Complete: the held reply is
released at once (often with its audio already waiting). Incomplete: `turn_pending`, and the
agent waits, up to `endpoint_max_ms` of silence. Without Smart Turn, `endpoint_ms` of silence
ends it.

The transcript has a say too: a voice that sounds finished over words that stop mid-phrase
waits for more (or the ceiling), and over an unsure last word it waits `endpoint_unsure_ms`; a
voice that does not sound finished over words that read finished waits `endpoint_words_ms`
rather than the ceiling, unless the model is sure the turn goes on (`SURE_INCOMPLETE`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass

from agent import events
from agent.audio import STT_RATE, Int16Array
from agent.config import ConversationConfig
from agent.dialogue.listening import TurnModel, UserTurns
from agent.dialogue.replies import Replies, Retiring
from agent.dialogue.turn import EmitEvent, ReplyTurn
from agent.metrics import Metrics
from agent.threads import run_in
from agent.turntaking.endpoint import EndpointPolicy, Kind, Verdict, Wait, wait_after_pause
from agent.turntaking.segmenter import SpeechEnded, SpeechPaused

log = logging.getLogger(__name__)


@dataclass
class _Decision:
    kind: Kind
    decided_wall: float
    probability: float | None = None


class TurnEnd:
    """Decides when the open user turn is over, and releases (or starts) its reply then."""

    def __init__(
        self,
        *,
        config: ConversationConfig,
        turn_model: TurnModel | None,
        turn_executor: Executor | None,
        turns: UserTurns,
        replies: Replies,
        retiring: Retiring,
        emit: EmitEvent,
        metrics: Metrics | None = None,
    ) -> None:
        self._speculate = config.speculate
        self._words_ms = config.endpoint_words_ms
        self._unsure_ms = config.endpoint_unsure_ms
        self._policy = EndpointPolicy(config.turn_threshold)
        self._turn_model = turn_model
        self._turn_executor = turn_executor
        self._turns = turns
        self._replies = replies
        self._retiring = retiring
        self._emit = emit
        self._metrics = metrics
        self._decision: _Decision | None = None
        self._probability: float | None = None
        self._verdict_task: asyncio.Task[None] | None = None
        self._release_task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        """A new user turn: nothing decided, nothing heard from Smart Turn yet."""
        self._decision = None
        self._probability = None

    def reopen(self) -> None:
        """The turn is not over after all: its reply was held back or discarded."""
        self._turns.answered = False
        self._decision = None

    # -- the user's pause and the end of their utterance --------------------------------

    def on_pause(self, paused: SpeechPaused) -> None:
        if self._turns.answered or self._replies.busy:
            return
        speech_end_wall = _speech_end_wall(
            paused.wall_time, paused.decided_sample, paused.end_sample
        )
        if self._speculate:
            self._start_reply(paused.audio, speech_end_wall)
        if self._turn_model is not None:
            self._verdict_task = asyncio.get_running_loop().create_task(
                self._ask_turn_model(paused.audio, speech_end_wall),
                name=f"turn-{self._turns.id}-endpoint",
            )

    async def _ask_turn_model(self, audio: Int16Array, speech_end_wall: float) -> None:
        model, executor = self._turn_model, self._turn_executor
        assert model is not None and executor is not None
        started = time.perf_counter()
        probability = await run_in(executor, model.probability, audio)
        if self._metrics is not None:
            self._metrics.turn_model_seconds.observe(time.perf_counter() - started)
        self._probability = probability
        verdict = self._policy.judge(probability)
        if verdict.complete:
            self._decide(_Decision(Kind.SEMANTIC, time.time(), probability), audio, speech_end_wall)
            return
        self._emit(events.turn_pending(self._turns.id, probability, "prosody"))
        # It does not sound finished; if it reads finished, wait less than the ceiling.
        # (This task is cancelled when the user speaks again.)
        reply, wait_ms = self._replies.current, self._words_ms
        if reply is None or reply.released or not wait_ms:
            return
        await reply.transcribed.wait()
        wait = wait_after_pause(verdict, reply.transcript or "", reply.last_word_probability)
        if wait is Wait.WORDS:
            await self._words_endpoint(reply, probability, audio, speech_end_wall, wait_ms)

    async def _words_endpoint(
        self,
        reply: ReplyTurn,
        probability: float | None,
        audio: Int16Array,
        speech_end_wall: float,
        wait_ms: int,
    ) -> None:
        """End the turn once the user has been silent `wait_ms` (cancelled when they speak
        again)."""
        await asyncio.sleep(max(0.0, speech_end_wall + wait_ms / 1000 - time.time()))
        if not self._turns.answered and self._replies.current is reply:
            self._decide(_Decision(Kind.WORDS, time.time(), probability), audio, speech_end_wall)

    def on_end(self, ended: SpeechEnded) -> None:
        if self._turns.answered:
            return
        self.cancel_verdict()
        semantic = self._turn_model is not None
        kind = Kind.FORCED if ended.forced else Kind.CEILING if semantic else Kind.SILENCE
        speech_end_wall = _speech_end_wall(ended.wall_time, ended.decided_sample, ended.end_sample)
        self._decide(
            _Decision(kind, ended.wall_time, self._probability), ended.audio, speech_end_wall
        )

    # -- the turn's end -----------------------------------------------------------------

    def _decide(self, decision: _Decision, audio: Int16Array, speech_end_wall: float) -> None:
        """The endpoint says the turn is over: release the held reply (or start one)."""
        self._decision = decision
        self._turns.answered = True
        if self._metrics is not None:
            self._metrics.endpoints.labels(kind=decision.kind.value).inc()
        reply = self._replies.current
        if reply is not None and not reply.released:
            if self._replies.busy:
                self._release_when_ready()
                return
            # A held reply that ended before the decision: no words in it, or it failed.
            self._replies.drop_ended(reply)
            return
        if self._replies.busy:
            log.warning("turn %d decided while a reply still runs", self._turns.id)
            return
        self._start_reply(audio, speech_end_wall)
        self._release_when_ready()

    def _start_reply(self, audio: Int16Array, speech_end_wall: float) -> None:
        self._replies.start(
            audio,
            speech_end_wall,
            turn_id=self._turns.id,
            held=True,
            before_decision=self._decision is None,
        )

    def _release_when_ready(self) -> None:
        reply = self._replies.current
        if reply is None or reply.released:
            return
        if self._release_task is not None and not self._release_task.done():
            return
        self._release_task = asyncio.get_running_loop().create_task(
            self._release(reply), name=f"turn-{reply.turn_id}-release"
        )

    async def _release(self, reply: ReplyTurn) -> None:
        decision = self._decision
        assert decision is not None
        await reply.transcribed.wait()
        if reply.failure is not None or self._replies.ended:
            # Failed or had no words while held: report it, there is nothing to play.
            self._replies.drop_ended(reply)
            return
        if decision.kind is Kind.SEMANTIC and self._words_hold(reply, decision):
            return
        metrics = reply.metrics
        metrics.endpoint = decision.kind.value
        metrics.endpoint_ms = (decision.decided_wall - reply.speech_end_wall) * 1000
        metrics.turn_probability = decision.probability
        speculated = reply.started_before_decision
        metrics.speculation = ("used" if reply.audio_ready else "late") if speculated else "none"
        if speculated and self._metrics is not None:
            self._metrics.speculation.labels(outcome=metrics.speculation).inc()
        self._replies.release(reply)

    def _words_hold(self, reply: ReplyTurn, decision: _Decision) -> bool:
        """The voice sounded done; do the words say wait? Words that stop mid-phrase wait
        for more (or the ceiling); an unsure ending waits `endpoint_unsure_ms`."""
        assert decision.probability is not None  # Smart Turn decided it
        verdict = Verdict(True, decision.probability)
        wait = wait_after_pause(verdict, reply.transcript or "", reply.last_word_probability)
        if wait is Wait.CEILING:
            reason = "words"
        elif wait is Wait.UNSURE and self._unsure_ms:
            reason = "unsure word"
            self.cancel_verdict()
            self._verdict_task = asyncio.get_running_loop().create_task(
                self._words_endpoint(
                    reply,
                    decision.probability,
                    reply.audio,
                    reply.speech_end_wall,
                    self._unsure_ms,
                ),
                name=f"turn-{reply.turn_id}-words-endpoint",
            )
        else:
            return False
        self.reopen()
        self._emit(events.turn_pending(reply.turn_id, decision.probability, reason))
        return True

    # -- cancelling ---------------------------------------------------------------------

    def cancel_verdict(self) -> None:
        """The user speaks again (or the utterance is over): no verdict on the pause."""
        task = self._verdict_task
        if task is not None:
            task.cancel()
            self._retiring.retire(task)
        self._verdict_task = None

    def cancel_tasks(self) -> None:
        """The reply is being cancelled: so are its release and the pending verdict."""
        for task in (self._release_task, self._verdict_task):
            if task is not None:
                task.cancel()
                self._retiring.retire(task)
        self._release_task = self._verdict_task = None


def _speech_end_wall(wall_time: float, decided_sample: int, end_sample: int) -> float:
    """Wall time of the end of speech: the deciding block's arrival, less the audio since."""
    return wall_time - (decided_sample - end_sample) / STT_RATE
