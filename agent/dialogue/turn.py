"""One reply: transcribe the user's utterance, stream the LLM's answer through the chunker,
synthesize each chunk as soon as it exists and write it to the agent's track. The whole
turn is one task; barge-in is one cancel of it. Each model stage runs under the session's
stage deadline (agent/stages/deadlines.py): a stage that fails or stalls fails the turn."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent import events
from agent.audio import Int16Array
from agent.dialogue.history import ChatHistory
from agent.events import TurnMetrics
from agent.stages.chunker import SpeechChunker
from agent.stages.deadlines import StageRunner
from agent.stages.llm import Generation, Message
from agent.stages.stt import Transcript
from agent.stages.tts import Synthesizer
from agent.threads import run_in
from agent.transport.playout import AgentAudioTrack

EmitEvent = Callable[[dict[str, Any]], None]


class TranscriberLike(Protocol):
    async def transcribe(self, audio: Int16Array) -> Transcript: ...


class ChatModelLike(Protocol):
    async def generate(
        self,
        messages: list[Message],
        on_delta: Callable[[str], None],
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


class StageError(Exception):
    """A model stage failed during a turn; the message names the stage and the cause."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause


class Outcome(enum.Enum):
    REPLIED = "replied"
    NO_SPEECH = "no_speech"


@dataclass
class SpokenChunk:
    text: str
    samples: int
    """Length on the agent's track, in 48 kHz samples."""


@dataclass
class ReplyTurn:
    turn_id: int
    audio: Int16Array
    speech_end_wall: float
    """Wall time at which the user stopped speaking: every stage is measured from it."""
    history: ChatHistory
    deps: TurnDeps
    stages: StageRunner
    metrics: TurnMetrics = field(default_factory=TurnMetrics)
    transcript: str | None = None
    spoken: list[SpokenChunk] = field(default_factory=list)
    reply_text: str = ""

    def _ms_since_speech_end(self, wall: float | None = None) -> float:
        return ((wall if wall is not None else time.time()) - self.speech_end_wall) * 1000

    async def run(self) -> Outcome:
        try:
            result = await self.stages.run(
                self.deps.transcriber.transcribe(self.audio), name=self._stage_name("stt")
            )
        except Exception as exc:
            raise StageError("speech recognition", exc) from exc
        self.metrics.stt_done_ms = self._ms_since_speech_end()
        self.metrics.stt_audio_ms = result.audio_s * 1000
        if not result.text.strip():
            return Outcome.NO_SPEECH
        self.transcript = result.text.strip()
        self.deps.emit(events.transcript(self.turn_id, self.transcript))
        self.history.add_user(self.transcript)

        chunks: asyncio.Queue[str | None] = asyncio.Queue()
        self.deps.track.on_first_audio(self._on_first_frame)
        try:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._think(chunks))
                    group.create_task(self._speak(chunks))
            except ExceptionGroup as group_error:
                raise group_error.exceptions[0] from group_error
            await self.deps.track.wait_for_playout()
        finally:
            self.deps.track.on_first_audio(None)
        if self.metrics.first_frame_sent_ms is not None:
            self.deps.emit(events.agent_speech_end(self.turn_id))
        self.history.add_assistant(" ".join(c.text for c in self.spoken))
        return Outcome.REPLIED

    async def _think(self, chunks: asyncio.Queue[str | None]) -> None:
        chunker = SpeechChunker()
        # The LLM fails only when it stops making progress: a long reply is not a stall.
        deadline = self.stages.deadline()
        over = False

        def on_delta(delta: str) -> None:
            if over:
                return  # a token of a generation abandoned at its deadline, still in flight
            deadline.extend()
            self.reply_text += delta
            self.deps.emit(events.agent_text(self.turn_id, delta))
            for chunk in chunker.push(delta):
                self._chunk_ready(chunks, chunk)

        try:
            try:
                generation = await self.stages.run(
                    self.deps.chat.generate(
                        self.history.for_prompt(), on_delta, conversation=self.history
                    ),
                    name=self._stage_name("llm"),
                    deadline=deadline,
                    waiting_for="token",
                )
            except Exception as exc:
                raise StageError("language model", exc) from exc
            for chunk in chunker.flush():
                self._chunk_ready(chunks, chunk)
        finally:
            over = True
            chunks.put_nowait(None)
        self.history.drop_oldest(generation.dropped_messages)
        self.metrics.llm_queue_wait_ms = generation.queue_wait_s * 1000
        self.metrics.prompt_tokens = generation.prompt_tokens
        self.metrics.prompt_tokens_evaluated = generation.prompt_tokens_evaluated
        self.metrics.completion_tokens = generation.completion_tokens
        if generation.first_token_at is not None:
            self.metrics.llm_first_token_ms = self._ms_since_speech_end(generation.first_token_at)

    def _chunk_ready(self, chunks: asyncio.Queue[str | None], chunk: str) -> None:
        if self.metrics.first_chunk_ms is None:
            self.metrics.first_chunk_ms = self._ms_since_speech_end()
        chunks.put_nowait(chunk)

    async def _speak(self, chunks: asyncio.Queue[str | None]) -> None:
        tts = self.deps.tts
        while (chunk := await chunks.get()) is not None:
            try:
                pcm = await self.stages.run(
                    run_in(self.deps.tts_executor, tts.synthesize, chunk),
                    name=self._stage_name("tts"),
                )
            except Exception as exc:
                raise StageError("speech synthesis", exc) from exc
            if pcm.size == 0:
                continue  # nothing speakable in this chunk
            if self.metrics.tts_first_audio_ms is None:
                self.metrics.tts_first_audio_ms = self._ms_since_speech_end()
            samples = self.deps.track.write(pcm, tts.sample_rate)
            self.spoken.append(SpokenChunk(chunk, samples))

    def _stage_name(self, stage: str) -> str:
        return f"turn-{self.turn_id}-{stage}"

    def _on_first_frame(self, wall: float) -> None:
        self.metrics.first_frame_sent_ms = self._ms_since_speech_end(wall)
        self.deps.emit(events.agent_speech_start(self.turn_id))

    def heard_text(self, samples_heard: int) -> str:
        """The text the user actually heard, from the samples the track reports as sent:
        whole chunks, then the share of the interrupted chunk's words."""
        words: list[str] = []
        remaining = samples_heard
        for chunk in self.spoken:
            chunk_words = chunk.text.split()
            if remaining >= chunk.samples:
                words.extend(chunk_words)
                remaining -= chunk.samples
                continue
            if chunk.samples > 0 and remaining > 0:
                share = int(len(chunk_words) * remaining / chunk.samples)
                words.extend(chunk_words[:share])
            break
        return " ".join(words)
