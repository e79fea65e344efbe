"""One reply: transcribe the user's utterance, stream the LLM's answer through the chunker,
synthesize each chunk as soon as it exists and write it to the agent's track. The whole turn
is one task; barge-in is one cancel of it. Each model stage runs under the session's stage
deadline (agent/stages/deadlines.py): a stage that fails or stalls fails the turn.

A turn can start *held*: speculatively, in a pause of the user's speech, before the endpoint
has decided that the turn is over. It then computes everything (transcript, reply, audio)
but shows and plays nothing, and changes nothing in the history, until `release()`. A held
turn the user talks into is cancelled and leaves no trace.

Replies are made for speech: the reply ends after `max_sentences` sentences (the LLM is told
to stop), and a reply cut by the token ceiling drops its unfinished last sentence.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent import events
from agent.audio import OUTPUT_RATE, Int16Array
from agent.dialogue.copying import CopyWatch, SaidBefore, without_earlier_turns
from agent.dialogue.history import ChatHistory
from agent.dialogue.spoken import SpokenChunk, heard_text
from agent.events import TurnMetrics
from agent.stages.chunker import FIRST_CHUNK_MAX_WORDS, SpeechChunker, ends_sentence
from agent.stages.deadlines import Deadline, StageRunner
from agent.stages.llm import DeltaCallback, Generation, Message
from agent.stages.stt import Transcript
from agent.stages.tts import URGENT_AHEAD_S, Synthesizer, trim_leading_silence
from agent.threads import run_in
from agent.transport.playout import AgentAudioTrack

log = logging.getLogger(__name__)

EmitEvent = Callable[[dict[str, Any]], None]

ChunkToSay = tuple[str, int, "asyncio.Future[bool] | None"]
"""A chunk for the voice: its text, how far into the reply's text it goes, and the copy
guard's verdict to wait for before a sound of it is played (agent.dialogue.copying)."""


class TranscriberLike(Protocol):
    async def transcribe(self, audio: Int16Array) -> Transcript: ...


class ChatModelLike(Protocol):
    async def generate(
        self,
        messages: list[Message],
        on_delta: DeltaCallback,
        max_tokens: int | None = None,
        *,
        conversation: object | None = None,
    ) -> Generation: ...


@dataclass(frozen=True)
class TurnDeps:
    """What every turn of a session needs; shared models are shared between sessions."""

    transcriber: TranscriberLike
    chat: ChatModelLike
    tts: Synthesizer
    tts_executor: Executor
    track: AgentAudioTrack
    emit: EmitEvent
    tts_urgent_executor: Executor | None = None
    """Where the chunks the listener waits for are spoken (`URGENT_AHEAD_S`), so that they
    never queue behind another session's later chunks; None: on `tts_executor` too."""


@dataclass(frozen=True)
class ReplySettings:
    max_sentences: int = 3
    """Sentences after which the reply ends (0: no cap)."""
    max_tokens: int | None = None
    """Token ceiling (None: the model's own default)."""
    first_chunk_words: int = FIRST_CHUNK_MAX_WORDS
    """Most words of the first spoken chunk (agent/stages/chunker.py)."""


class StageError(Exception):
    """A model stage failed during a turn; the message names the stage and the cause."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause


class Outcome(enum.Enum):
    REPLIED = "replied"
    NO_SPEECH = "no_speech"


class AsideContext:
    """The owner of a prompt asked beside the conversation, such as a reply asked for again
    without the earlier turns: it takes the model as another conversation would, so the
    conversation's own context is saved and comes back for its next turn
    (agent/stages/llm/contexts.py), rather than being overwritten by the short prompt."""


@dataclass
class ReplyTurn:
    turn_id: int
    audio: Int16Array
    speech_end_wall: float
    """Wall time at which the user stopped speaking: every stage is measured from it."""
    history: ChatHistory
    deps: TurnDeps
    stages: StageRunner
    settings: ReplySettings = field(default_factory=ReplySettings)
    held: bool = False
    metrics: TurnMetrics = field(default_factory=TurnMetrics)
    transcript: str | None = None
    last_word_probability: float | None = None
    """Of the transcript's last word, where Whisper scored it (see agent.turntaking.endpoint)."""
    spoken: list[SpokenChunk] = field(default_factory=list)
    reply_text: str = ""
    compute_s: float = 0.0
    """Worker time this turn's stages took so far (what a discarded speculation wasted)."""
    transcribed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once speech recognition is done (whatever it heard, or failed)."""
    started_before_decision: bool = False
    """Speculative: started in a pause, before the endpoint decided."""
    failure: Exception | None = None
    """Why a held turn failed before it was released (reported when its turn is decided)."""
    _held_events: list[dict[str, Any]] = field(default_factory=list)
    _held_audio: list[tuple[Int16Array, int]] = field(default_factory=list)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _user_committed: bool = False

    def __post_init__(self) -> None:
        if not self.held:
            self._released.set()

    def _ms_since_speech_end(self, wall: float | None = None) -> float:
        return ((wall if wall is not None else time.time()) - self.speech_end_wall) * 1000

    @property
    def released(self) -> bool:
        return self._released.is_set()

    @property
    def audio_ready(self) -> bool:
        """Speech is synthesized and waiting (held), or already on the track."""
        return bool(self._held_audio or self.spoken)

    def release(self) -> None:
        """The endpoint confirmed the turn: show what was computed and play it."""
        if self._released.is_set():
            return
        self._released.set()
        self._commit_user()
        for event in self._held_events:
            self.deps.emit(event)
        self._held_events.clear()
        if self._held_audio:
            self.deps.track.on_first_audio(self._on_first_frame)
        for pcm, rate in self._held_audio:
            self._play(pcm, rate)
        self._held_audio.clear()

    def _emit(self, event: dict[str, Any]) -> None:
        if self._released.is_set():
            self.deps.emit(event)
        else:
            self._held_events.append(event)

    def _commit_user(self) -> None:
        if self.transcript and not self._user_committed and self._released.is_set():
            self._user_committed = True
            self.history.add_user(self.transcript)

    async def run(self) -> Outcome:
        started = time.perf_counter()
        try:
            result = await self.stages.run(
                self.deps.transcriber.transcribe(self.audio), name=self._stage_name("stt")
            )
        except Exception as exc:
            raise StageError("speech recognition", exc) from exc
        finally:
            self.compute_s += time.perf_counter() - started
            self.transcribed.set()
        self.metrics.stt_done_ms = self._ms_since_speech_end()
        self.metrics.stt_ms = (
            result.decode_ms
            if result.decode_ms is not None
            else (time.perf_counter() - started) * 1000
        )
        self.metrics.stt_window_s = result.window_s
        self.metrics.stt_audio_ms = result.audio_s * 1000
        self.transcript = result.text.strip()
        self.last_word_probability = result.last_word_probability
        if not self.transcript:
            return Outcome.NO_SPEECH
        self._emit(events.transcript(self.turn_id, self.transcript))
        # The prompt before the user's words join the history: a turn released while it
        # was transcribing commits them here, and the prompt held them twice.
        prompt = self.history.prompt_with(self.transcript)
        self._commit_user()

        chunks: asyncio.Queue[ChunkToSay | None] = asyncio.Queue()
        try:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._think(chunks, prompt))
                    group.create_task(self._speak(chunks))
            except ExceptionGroup as group_error:
                raise group_error.exceptions[0] from group_error
            await self._released.wait()
            await self.deps.track.wait_for_playout()
        finally:
            self.deps.track.drop_first_audio(self._on_first_frame)
        if self.metrics.first_frame_sent_ms is not None:
            self.deps.emit(events.agent_speech_end(self.turn_id))
        if self.spoken:
            # In the model's own words, not the chunks as said: what its context holds, so
            # the next turn evaluates only the new words (agent/stages/llm/llama.py).
            self.history.add_assistant(self.reply_text[: self.spoken[-1].written_to].rstrip())
        return Outcome.REPLIED

    async def _think(self, chunks: asyncio.Queue[ChunkToSay | None], prompt: list[Message]) -> None:
        chunker = SpeechChunker(first_max_words=self.settings.first_chunk_words)
        # The LLM fails only when it stops making progress: a long reply is not a stall.
        deadline = self.stages.deadline()
        over = copied = False
        sentences = 0
        cap = self.settings.max_sentences
        retry = without_earlier_turns(prompt)
        # A first turn has no earlier turns to leave out: asked again, it would say the same.
        earlier = SaidBefore.in_prompt(prompt) if retry != prompt else None
        watch = CopyWatch(earlier, lambda *chunk: self._chunk_ready(chunks, *chunk))

        def on_delta(delta: str) -> bool:
            nonlocal sentences, copied
            if over or copied or (cap and sentences >= cap):
                return True  # a token still in flight after the cap or the deadline
            deadline.extend()
            self.reply_text += delta
            for chunk, written_to in chunker.push_spans(delta):
                watch.chunk(chunk, written_to)
                if ends_sentence(chunk):
                    sentences += 1
                    if cap and sentences >= cap:
                        break
            # A copy shows in the reply's first words: nothing of it is heard, and it is
            # asked for again (agent.dialogue.copying).
            copied = watch.wrote(delta)
            return copied or bool(cap and sentences >= cap)

        started = time.perf_counter()
        try:
            generation = await self._generate(prompt, on_delta, deadline)
            if copied:
                log.warning(
                    "turn %d: the reply began %r, a copy of what was said before: asked again "
                    "without the earlier turns",
                    self.turn_id,
                    self.reply_text[:80],
                )
                self.metrics.reply_retried = True
                self.metrics.first_chunk_ms = None  # the withdrawn chunk was not the reply's first
                watch.withdraw()
                chunker.discard()
                self.reply_text, copied, sentences = "", False, 0
                dropped = generation.dropped_messages
                # Asked beside the conversation: its evaluated history stays saved for the
                # next turn (evaluating 1,000 tokens again took 5 s on 2 cores).
                aside = AsideContext()
                generation = await self._generate(retry, on_delta, deadline, aside)
                generation.dropped_messages = dropped
            watch.ended()
            if generation.finish_reason == "length" and sentences > 0:
                chunker.discard()  # the ceiling cut a sentence short: do not say half of it
            elif not (cap and sentences >= cap):
                for chunk, written_to in chunker.flush_spans():
                    watch.chunk(chunk, written_to)  # the reply ended: said unwatched
        finally:
            over = True
            watch.withdraw()  # a reply that failed plays nothing the guard had not cleared
            self.compute_s += time.perf_counter() - started
            chunks.put_nowait(None)
        self.history.drop_oldest(generation.dropped_messages)
        self.metrics.llm_queue_wait_ms = generation.queue_wait_s * 1000
        self.metrics.prompt_tokens = generation.prompt_tokens
        self.metrics.prompt_tokens_evaluated = generation.prompt_tokens_evaluated
        self.metrics.completion_tokens = generation.completion_tokens
        self.metrics.reply_sentences = sentences
        self.metrics.finish_reason = generation.finish_reason
        if generation.first_token_at is not None:
            self.metrics.llm_first_token_ms = self._ms_since_speech_end(generation.first_token_at)

    async def _generate(
        self,
        prompt: list[Message],
        on_delta: DeltaCallback,
        deadline: Deadline,
        conversation: object | None = None,
    ) -> Generation:
        try:
            return await self.stages.run(
                self.deps.chat.generate(
                    prompt,
                    on_delta,
                    self.settings.max_tokens,
                    conversation=conversation or self.history,
                ),
                name=self._stage_name("llm"),
                deadline=deadline,
                waiting_for="token",
            )
        except Exception as exc:
            raise StageError("language model", exc) from exc

    def _chunk_ready(
        self,
        chunks: asyncio.Queue[ChunkToSay | None],
        chunk: str,
        written_to: int,
        verdict: asyncio.Future[bool] | None,
    ) -> None:
        if self.metrics.first_chunk_ms is None:
            self.metrics.first_chunk_ms = self._ms_since_speech_end()
        chunks.put_nowait((chunk, written_to, verdict))

    async def _speak(self, chunks: asyncio.Queue[ChunkToSay | None]) -> None:
        tts = self.deps.tts
        first = True
        while (item := await chunks.get()) is not None:
            chunk, written_to, verdict = item
            urgent = self._audio_ahead_s() < URGENT_AHEAD_S
            executor = self.deps.tts_executor
            if urgent and self.deps.tts_urgent_executor is not None:
                executor = self.deps.tts_urgent_executor
            started = time.perf_counter()
            try:
                pcm = await self.stages.run(
                    run_in(executor, tts.synthesize, chunk, urgent=urgent),
                    name=self._stage_name("tts"),
                )
            except Exception as exc:
                raise StageError("speech synthesis", exc) from exc
            finally:
                self.compute_s += time.perf_counter() - started
            if first:
                pcm = trim_leading_silence(pcm, tts.sample_rate)
            if pcm.size == 0:
                continue  # nothing speakable in this chunk
            if verdict is not None and not await verdict:
                continue  # a copy of what was said before: asked for again, this is not heard
            first = False
            if self.metrics.tts_first_audio_ms is None:
                self.metrics.tts_first_audio_ms = self._ms_since_speech_end()
            self._emit(events.agent_text(self.turn_id, (" " if self.spoken else "") + chunk))
            self.spoken.append(SpokenChunk(chunk, 0, written_to))
            if self._released.is_set():
                if len(self.spoken) == 1:
                    self.deps.track.on_first_audio(self._on_first_frame)
                self._play(pcm, tts.sample_rate)
            else:
                self._held_audio.append((pcm, tts.sample_rate))

    def _audio_ahead_s(self) -> float:
        """Seconds of this reply's audio not yet sent: what the next chunk is written in."""
        if self._released.is_set():
            return self.deps.track.queued_samples / OUTPUT_RATE
        return sum(pcm.size / rate for pcm, rate in self._held_audio)

    def _play(self, pcm: Int16Array, rate: int) -> None:
        """Write the next spoken chunk's audio (chunks are played in the order spoken)."""
        index = next(i for i, c in enumerate(self.spoken) if c.samples == 0)
        self.spoken[index].samples = max(1, self.deps.track.write(pcm, rate))

    def _stage_name(self, stage: str) -> str:
        return f"turn-{self.turn_id}-{stage}"

    def _on_first_frame(self, wall: float) -> None:
        self.metrics.first_frame_sent_ms = self._ms_since_speech_end(wall)
        self.deps.emit(events.agent_speech_start(self.turn_id))

    def heard_text(self, samples_heard: int) -> str:
        """The text the user actually heard, from the samples the track reports as sent."""
        return heard_text(self.spoken, samples_heard)
