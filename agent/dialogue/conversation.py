"""The conversation of one session: the user's audio through VAD into utterances, the end of
each user turn, one reply at a time, and the user talking over the agent.

The turn's end (agent/turntaking/endpoint.py): a pause of `pause_ms` asks Smart Turn and,
at the same moment, starts the reply *held* (speculation): transcript, first clause and its
audio are prepared while the endpoint decides. Complete: the held reply is released at once
(often with its audio already waiting). Incomplete: `turn_pending`, and the agent waits,
up to `endpoint_max_ms` of silence. Without Smart Turn, `endpoint_ms` of silence ends it.

No word is lost: when the user goes on speaking before any of the reply was heard, it is
one user turn. The reply is cancelled without a trace (nothing played, nothing in the
history) and the whole utterance, earlier speech, pause and new speech, is transcribed as
one once the user pauses again. Once part of the reply was heard, the user's speech is a
new turn over the agent: its voice is paused at once and the overlap is judged
(agent/turntaking/barge_in.py): an interruption clears the reply and keeps the heard part
in the history; a cough, a backchannel or the agent's own echo resumes it where it paused.

A turn whose model stage fails or stalls (agent/stages/deadlines.py) reports an error event
and the conversation keeps listening; after `max_failed_turns` such turns in a row it asks,
through `on_fatal`, for the session to be closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agent import events
from agent.audio import STT_RATE, Int16Array
from agent.config import ConversationConfig
from agent.dialogue.history import ChatHistory
from agent.dialogue.overlap import Overlap
from agent.dialogue.turn import Outcome, ReplySettings, ReplyTurn, StageError, TurnDeps
from agent.metrics import Metrics
from agent.stages.deadlines import StageRunner, StageTimeout
from agent.threads import run_in
from agent.turntaking import barge_in
from agent.turntaking.endpoint import (
    EndpointPolicy,
    Kind,
    unsure_ending,
    words_continue,
    words_finished,
)
from agent.turntaking.segmenter import (
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnEvent,
    TurnSegmenter,
)

log = logging.getLogger(__name__)

GAP_BETWEEN_MERGED_UTTERANCES = np.zeros(STT_RATE // 5, dtype=np.int16)
ECHO_WORDS = 12
"""The agent's last words an echo can repeat (a round trip is well under a second)."""
MAX_CARRY_SAMPLES = 300 * STT_RATE
"""Five minutes of a user who never pauses: more is not kept (memory is bounded per session)."""


class VadLike(Protocol):
    def feed(self, block: Int16Array, wall_time: float) -> list[TurnEvent]: ...

    @property
    def segmenter(self) -> TurnSegmenter: ...


class EchoHold(Protocol):
    def hold(self) -> None: ...


class TurnModel(Protocol):
    def probability(self, audio: Int16Array) -> float:
        """P(the turn is complete), blocking."""
        ...


@dataclass(frozen=True)
class Listening:
    """How a session hears the user: its VAD, and the shared end-of-turn model if any."""

    vad: VadLike
    vad_executor: Executor
    turn_model: TurnModel | None = None
    turn_executor: Executor | None = None
    echo: EchoHold | None = None
    """The VAD's echo mask, told when the agent's voice stops for the user's."""


@dataclass
class _Decision:
    kind: Kind
    decided_wall: float
    probability: float | None = None


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
        self._config = config
        self._listening = listening
        self._vad = listening.vad
        self._deps = deps
        self._metrics = metrics
        self._on_fatal = on_fatal
        self._stages = StageRunner(config.stage_timeout_s)
        self._policy = EndpointPolicy(config.turn_threshold)
        self._barge_in = barge_in.BargeInSettings(config.barge_in_ms, config.barge_in_max_ms)
        self._reply_settings = ReplySettings(config.max_reply_sentences, config.max_reply_tokens)
        self._failed_turns = 0
        self.history = ChatHistory(config.full_system_prompt)
        self._audio: asyncio.Queue[tuple[Int16Array, float]] = asyncio.Queue()
        self._turn_ids = 0
        self._reply: ReplyTurn | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._history_before_reply = self.history.snapshot()
        self._decision: _Decision | None = None
        self._verdict_task: asyncio.Task[None] | None = None
        self._release_task: asyncio.Task[None] | None = None
        self._answered = False
        """The open utterance's turn is decided (its reply released)."""
        self._probability: float | None = None
        self._carry: Int16Array | None = None
        """Audio of a closed utterance whose reply was cancelled unheard: the next
        utterance continues it."""
        self._overlap: Overlap | None = None
        self._user_speaking = False
        self._retiring: set[asyncio.Task[Any]] = set()
        """Cancelled tasks whose workers have not returned yet (see `_retire`)."""
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name="listen")

    # -- AudioSink ----------------------------------------------------------------------

    def feed(self, block: Int16Array, stream_samples: int) -> None:
        self._audio.put_nowait((block, time.time()))

    async def aclose(self) -> None:
        self._listener.cancel()
        await asyncio.gather(self._listener, return_exceptions=True)
        self._cancel_reply()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self._stages.aclose()

    # -- state --------------------------------------------------------------------------

    @property
    def abandoned_stages(self) -> int:
        """Stage workers given up on at their deadline that have not returned yet."""
        return self._stages.abandoned

    @property
    def busy(self) -> bool:
        return self._reply_task is not None and not self._reply_task.done()

    @property
    def semantic(self) -> bool:
        return self._listening.turn_model is not None

    def _heard(self, reply: ReplyTurn) -> bool:
        """Has any of this reply reached the user?"""
        return reply.released and (
            self._deps.track.utterance_sent_samples > 0 or bool(reply.metrics.first_frame_sent_ms)
        )

    def _current_turn_id(self) -> int:
        return self._turn_ids

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
            await self._judge_overlap()

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
        if self._overlap is not None:
            # Still the same sound over the agent (after a pause in it): one overlap.
            self._user_speech_started()
            return
        self._cancel_verdict()
        reply = self._reply
        if reply is not None and self.busy and self._heard(reply):
            # Over the agent's voice: pause it, and judge what this is.
            if resumed:
                self._vad.segmenter.split()
            self._deps.track.pause()
            if self._listening.echo is not None:
                self._listening.echo.hold()
            played = reply.heard_text(self._deps.track.utterance_sent_samples).split()
            self._overlap = Overlap(reply, " ".join(played[-ECHO_WORDS:]))
            self._new_user_turn()
            return
        if reply is not None and self.busy:
            # The user goes on before hearing a word of the reply: one user turn.
            await self._discard_reply(merge=not resumed)
            self._user_speech_started()
            return
        if resumed and self._answered:
            # The reply was heard (and is over): this is the user's next turn.
            self._vad.segmenter.split()
            self._new_user_turn()
            return
        if resumed:
            self._user_speech_started()
            return
        self._new_user_turn()

    def _new_user_turn(self) -> None:
        self._turn_ids += 1
        self._answered = False
        self._decision = None
        self._probability = None
        self._user_speaking = False
        self._user_speech_started()

    def _user_speech_started(self) -> None:
        if not self._user_speaking:
            self._user_speaking = True
            self._deps.emit(events.user_speech_start(self._current_turn_id()))

    def _user_speech_ended(self, speech_ms: float, forced: bool, silence_ms: float = 0.0) -> None:
        if self._user_speaking:
            self._user_speaking = False
            self._deps.emit(
                events.user_speech_end(self._current_turn_id(), speech_ms, forced, silence_ms)
            )

    async def _on_pause(self, paused: SpeechPaused) -> None:
        if self._overlap is not None:
            return
        self._user_speech_ended(
            paused.speech_ms, False, _samples_ms(paused.decided_sample - paused.end_sample)
        )
        if self._answered or self.busy:
            return
        speech_end_wall = _speech_end_wall(
            paused.wall_time, paused.decided_sample, paused.end_sample
        )
        if self._config.speculate:
            self._start_reply(paused.audio, speech_end_wall, held=True)
        if self._listening.turn_model is not None:
            self._verdict_task = asyncio.get_running_loop().create_task(
                self._ask_turn_model(paused.audio, speech_end_wall),
                name=f"turn-{self._current_turn_id()}-endpoint",
            )

    async def _ask_turn_model(self, audio: Int16Array, speech_end_wall: float) -> None:
        model, executor = self._listening.turn_model, self._listening.turn_executor
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
        self._deps.emit(events.turn_pending(self._current_turn_id(), probability, "prosody"))
        # It does not sound finished; if it reads finished, wait less than the ceiling.
        # (This task is cancelled when the user speaks again.)
        reply, wait_ms = self._reply, self._config.endpoint_words_ms
        if reply is None or reply.released or not wait_ms:
            return
        await reply.transcribed.wait()
        if words_finished(reply.transcript or "", reply.last_word_probability):
            await self._words_endpoint(reply, probability, audio, speech_end_wall)

    async def _words_endpoint(
        self, reply: ReplyTurn, probability: float | None, audio: Int16Array, speech_end_wall: float
    ) -> None:
        """End the turn once the user has been silent `endpoint_words_ms` (cancelled when
        they speak again)."""
        wait_s = self._config.endpoint_words_ms / 1000
        await asyncio.sleep(max(0.0, speech_end_wall + wait_s - time.time()))
        if not self._answered and self._reply is reply:
            self._decide(_Decision(Kind.WORDS, time.time(), probability), audio, speech_end_wall)

    async def _on_end(self, ended: SpeechEnded) -> None:
        if self._overlap is not None:
            self._overlap.ended = ended
            return
        self._user_speech_ended(
            ended.speech_ms, ended.forced, _samples_ms(ended.decided_sample - ended.end_sample)
        )
        if self._answered:
            return
        self._cancel_verdict()
        kind = Kind.FORCED if ended.forced else Kind.CEILING if self.semantic else Kind.SILENCE
        speech_end_wall = _speech_end_wall(ended.wall_time, ended.decided_sample, ended.end_sample)
        self._decide(
            _Decision(kind, ended.wall_time, self._probability), ended.audio, speech_end_wall
        )

    # -- the turn's end -----------------------------------------------------------------

    def _decide(self, decision: _Decision, audio: Int16Array, speech_end_wall: float) -> None:
        """The endpoint says the turn is over: release the held reply (or start one)."""
        self._decision = decision
        self._answered = True
        if self._metrics is not None:
            self._metrics.endpoints.labels(kind=decision.kind.value).inc()
        reply = self._reply
        if reply is not None and not reply.released:
            if self.busy:
                self._release_when_ready()
                return
            # A held reply that ended before the decision: no words in it, or it failed.
            self._reply = None
            if reply.failure is not None:
                self._report_failure(reply, reply.failure)
            return
        if self.busy:
            log.warning("turn %d decided while a reply still runs", self._current_turn_id())
            return
        self._start_reply(audio, speech_end_wall, held=True)
        self._release_when_ready()

    def _release_when_ready(self) -> None:
        reply = self._reply
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
        if reply.failure is not None or (self._reply_task is not None and self._reply_task.done()):
            # Failed or had no words while held: report it, there is nothing to play.
            self._reply = None
            if reply.failure is not None:
                self._report_failure(reply, reply.failure)
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
        self._history_before_reply = self.history.snapshot()
        reply.release()

    def _words_hold(self, reply: ReplyTurn, decision: _Decision) -> bool:
        """The voice sounded done; do the words say wait? Words that stop mid-phrase wait
        for more (or the ceiling); an unsure ending waits `endpoint_words_ms`."""
        transcript = reply.transcript or ""
        if words_continue(transcript):
            reason = "words"
        elif self._config.endpoint_words_ms and unsure_ending(
            transcript, reply.last_word_probability
        ):
            reason = "unsure word"
            self._cancel_verdict()
            self._verdict_task = asyncio.get_running_loop().create_task(
                self._words_endpoint(
                    reply, decision.probability, reply.audio, reply.speech_end_wall
                ),
                name=f"turn-{reply.turn_id}-words-endpoint",
            )
        else:
            return False
        self._answered = False
        self._decision = None
        self._deps.emit(events.turn_pending(reply.turn_id, decision.probability, reason))
        return True

    # -- replies ------------------------------------------------------------------------

    def _start_reply(self, audio: Int16Array, speech_end_wall: float, *, held: bool) -> None:
        if self._carry is not None:
            audio = np.concatenate([self._carry, GAP_BETWEEN_MERGED_UTTERANCES, audio])
        reply = ReplyTurn(
            turn_id=self._current_turn_id(),
            audio=audio,
            speech_end_wall=speech_end_wall,
            history=self.history,
            deps=self._deps,
            stages=self._stages,
            settings=self._reply_settings,
            held=held,
        )
        reply.started_before_decision = self._decision is None
        self._reply = reply
        self._history_before_reply = self.history.snapshot()
        self._reply_task = asyncio.get_running_loop().create_task(
            self._run_reply(reply), name=f"turn-{reply.turn_id}"
        )

    async def _run_reply(self, reply: ReplyTurn) -> None:
        try:
            outcome = await reply.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not reply.released:
                reply.failure = exc  # reported if and when its turn is decided
                return
            self._report_failure(reply, exc)
            return
        self._carry = None
        if outcome is Outcome.NO_SPEECH:
            return
        self._failed_turns = 0
        if self._metrics is not None:
            self._metrics.turns.inc()
            self._metrics.observe_turn(reply.metrics)
        self._deps.emit(reply.metrics.event(reply.turn_id))

    def _report_failure(self, reply: ReplyTurn, exc: Exception) -> None:
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
        limit = self._config.max_failed_turns
        if limit > 0 and self._failed_turns >= limit and self._on_fatal is not None:
            log.warning("%d turns failed in a row: closing the session", self._failed_turns)
            self._on_fatal(f"{self._failed_turns} turns in a row failed; last: {message}")

    async def _discard_reply(self, *, merge: bool) -> None:
        """The user went on before hearing the reply: cancel it and forget it. `merge`: its
        utterance is closed, so the next one carries its audio."""
        reply = self._reply
        if reply is None:
            return
        was_speculation = not reply.released
        task = self._reply_task
        self._cancel_reply()
        self.history.restore(self._history_before_reply)
        if merge:
            self._carry = reply.audio[-MAX_CARRY_SAMPLES:]
        self._answered = False
        self._decision = None
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

    def _cancel_reply(self) -> None:
        """Stop the reply at once: silence, no more events, its tasks cancelled. Their model
        workers finish in the background (`_retire`): the listener never waits for a prompt
        being evaluated or a chunk being synthesized, or the user's audio would pile up."""
        for task in (self._release_task, self._verdict_task, self._reply_task):
            if task is not None:
                task.cancel()
                self._retire(task)
        self._deps.track.clear()
        self._deps.track.on_first_audio(None)
        self._reply_task = self._release_task = self._verdict_task = None
        self._reply = None

    def _cancel_verdict(self) -> None:
        task = self._verdict_task
        if task is not None:
            task.cancel()
            self._retire(task)
        self._verdict_task = None

    def _retire(self, task: asyncio.Task[Any]) -> None:
        """Own a cancelled task until it ends (`aclose` awaits the rest)."""
        if not task.done():
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    # -- the user over the agent --------------------------------------------------------

    async def _judge_overlap(self) -> None:
        overlap = self._overlap
        if overlap is None:
            return
        segmenter = self._vad.segmenter
        if overlap.ended is None:
            overlap.voiced_ms = segmenter.run_speech_ms
            overlap.speaking = segmenter.speaking
        else:
            overlap.speaking = False
        overlap.take_transcript()
        if overlap.needs_transcript(self._barge_in):
            audio = overlap.ended.audio if overlap.ended else segmenter.utterance_audio()
            overlap.transcribing_voiced_ms = overlap.voiced_ms
            overlap.transcribing = asyncio.get_running_loop().create_task(
                self._deps.transcriber.transcribe(audio), name="overlap-stt"
            )
        verdict = overlap.verdict(self._barge_in)
        if verdict is barge_in.Overlap.INTERRUPT:
            await self._interrupt(overlap)
        elif verdict is barge_in.Overlap.RESUME:
            await self._resume(overlap)

    async def _interrupt(self, overlap: Overlap) -> None:
        """Barge-in: silence the agent for good, cancel the reply, keep what was heard."""
        self._overlap = None
        await _cancel(overlap.transcribing)
        reply = overlap.reply
        heard_samples = self._deps.track.clear()
        self._cancel_reply()
        heard = reply.heard_text(heard_samples)
        self.history.add_assistant(heard)
        reply.metrics.interrupted = True
        if self._metrics is not None:
            self._metrics.interruptions.inc()
        self._deps.emit(events.interrupted(reply.turn_id, heard))
        self._deps.emit(reply.metrics.event(reply.turn_id))
        if overlap.ended is not None:
            # The user's words over the agent are their next turn, and they are over.
            await self._on_end(overlap.ended)

    async def _resume(self, overlap: Overlap) -> None:
        """Not the user taking the turn: the agent goes on where it paused."""
        self._overlap = None
        await _cancel(overlap.transcribing)
        self._deps.track.resume()
        if overlap.ended is None:
            self._vad.segmenter.reset()
        self._user_speech_ended(overlap.voiced_ms, False)
        self._turn_ids -= 1  # the sound was no turn of the user's
        self._answered = True  # the turn being answered is the one before it
        if self._metrics is not None:
            self._metrics.false_interruptions.inc()
        heard = overlap.reply.heard_text(self._deps.track.utterance_sent_samples)
        self._deps.emit(
            events.interrupted(overlap.reply.turn_id, heard, false_interruption=True, resumed=True)
        )


def _speech_end_wall(wall_time: float, decided_sample: int, end_sample: int) -> float:
    """Wall time of the end of speech: the deciding block's arrival, less the audio since."""
    return wall_time - (decided_sample - end_sample) / STT_RATE


def _samples_ms(samples: int) -> float:
    return samples * 1000 / STT_RATE


async def _cancel(task: asyncio.Task[object] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
