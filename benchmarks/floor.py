"""The compute floor: the same utterances through the same models, called directly, with
no transport, no session and no event loop traffic. It is what the pipeline's compute alone
costs; mouth-to-ear minus the floor is the overhead (transport, queueing, pacing).

Per utterance, from the end of its speech (as the bench measures it):
  pause        the VAD, fed 20 ms blocks as the server is, finds the pause that ends the
               utterance (`--pause-ms` of silence, audio time, plus the deciding block's
               compute): where the server asks the end-of-turn model and starts the reply;
  turn         the end-of-turn model (Smart Turn) on the utterance, when there is one;
  endpoint     the decision: pause + turn when the model calls the turn complete (else its
               ceiling); without a model, the VAD's silence endpoint (`--endpoint-ms`);
  stt          faster-whisper on the utterance;
  llm          the LLM streaming, through the chunker, to the first speakable chunk, in
               one conversation across the corpus (the history grows as in a session, and
               each reply is generated in full and kept);
  tts          the voice (Piper or MMS-TTS) on that first chunk.
The reply is prepared from the pause on while the endpoint decides (speculation), so the
floor is max(endpoint, pause + stt + llm + tts), every model called alone, one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from agent.app.runtime import Runtime, session_vad
from agent.audio import STT_RATE, Int16Array, resample_pcm
from agent.config import AppConfig, ConversationConfig, ModelConfig
from agent.dialogue.history import ChatHistory
from agent.dialogue.listening import TurnModel
from agent.stages.chunker import SpeechChunker
from agent.stages.llm import ChatBackend
from agent.stages.stt import Transcriber
from agent.stages.tts import Synthesizer
from agent.turntaking.vad import SpeechEnded, SpeechPaused, StreamingVad
from benchmarks.corpus import Utterance

Found = TypeVar("Found", SpeechEnded, SpeechPaused)

log = logging.getLogger(__name__)

BLOCK = STT_RATE // 50
"""20 ms at 16 kHz: what the server's drain hands the VAD per frame."""


@dataclass
class FloorResult:
    utterance: str
    endpoint_ms: float | None = None
    pause_ms: float | None = None
    turn_ms: float | None = None
    turn_probability: float | None = None
    stt_ms: float | None = None
    llm_first_token_ms: float | None = None
    llm_first_chunk_ms: float | None = None
    tts_ms: float | None = None
    floor_ms: float | None = None
    transcript: str = ""
    first_chunk: str = ""
    status: str = "ok"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def endpoint(
    vad: StreamingVad, utterance: Utterance, kind: type[Found]
) -> tuple[Found | None, float]:
    """Feed the utterance then silence in 20 ms blocks; (the first event of `kind` after the
    end of speech: the utterance's end, or its final pause; ms from the end of speech until
    the VAD decided it: audio waited for plus the deciding block's compute)."""
    pcm = resample_pcm(utterance.pcm, utterance.rate, STT_RATE)
    pcm = np.concatenate([pcm, np.zeros(3 * STT_RATE, dtype=np.int16)])
    end_of_speech = utterance.speech_end_s
    for start in range(0, pcm.size - BLOCK + 1, BLOCK):
        started = time.perf_counter()
        events = vad.feed(pcm[start : start + BLOCK], 0.0)
        compute = time.perf_counter() - started
        for event in events:
            if isinstance(event, kind) and event.decided_sample / STT_RATE > end_of_speech:
                waited = (start + BLOCK) / STT_RATE - end_of_speech
                return event, (waited + compute) * 1000
    return None, 0.0


async def first_chunk(
    chat: ChatBackend, history: ChatHistory, first_chunk_words: int
) -> tuple[float | None, float | None, list[str]]:
    """(ms to the first token, ms to the first speakable chunk, every chunk of the reply).
    The reply is generated in full, as a session does, and joins the history."""
    chunker = SpeechChunker(first_max_words=first_chunk_words)
    chunks: list[str] = []
    marks: dict[str, float] = {}

    def on_delta(delta: str) -> None:
        marks.setdefault("token", time.perf_counter())
        chunks.extend(chunker.push(delta))
        if chunks:
            marks.setdefault("chunk", time.perf_counter())

    started = time.perf_counter()
    generation = await chat.generate(history.for_prompt(), on_delta, conversation=history)
    history.drop_oldest(generation.dropped_messages)
    chunks.extend(chunker.flush())
    if chunks:
        marks.setdefault("chunk", time.perf_counter())
    history.add_assistant(" ".join(chunks))
    token_ms = (marks["token"] - started) * 1000 if "token" in marks else None
    chunk_ms = (marks["chunk"] - started) * 1000 if "chunk" in marks else None
    return token_ms, chunk_ms, chunks


async def measure_one(
    utterance: Utterance,
    *,
    transcriber: Transcriber,
    chat: ChatBackend,
    tts: Synthesizer,
    conversation: ConversationConfig,
    history: ChatHistory | None = None,
    turn_model: TurnModel | None = None,
) -> FloorResult:
    """One utterance; `history` (one conversation across utterances, as in a session)
    gets the transcript and the reply."""
    result = FloorResult(utterance.name)
    vad = session_vad(conversation, semantic=turn_model is not None)
    audio: Int16Array
    if turn_model is not None:
        paused, pause_ms = await asyncio.to_thread(endpoint, vad, utterance, SpeechPaused)
        if paused is None:
            result.status = "no_endpoint"
            return result
        audio = paused.audio
        started = time.perf_counter()
        probability = await asyncio.to_thread(turn_model.probability, audio)
        result.turn_ms = (time.perf_counter() - started) * 1000
        result.turn_probability = round(probability, 3)
        complete = probability >= conversation.turn_threshold
        result.endpoint_ms = pause_ms + result.turn_ms if complete else conversation.endpoint_max_ms
    else:
        ended, pause_ms = await asyncio.to_thread(endpoint, vad, utterance, SpeechEnded)
        if ended is None:
            result.status = "no_endpoint"
            return result
        audio = ended.audio
        result.endpoint_ms = pause_ms
    result.pause_ms = pause_ms
    started = time.perf_counter()
    transcript = await asyncio.to_thread(transcriber.transcribe_blocking, audio)
    result.stt_ms = (time.perf_counter() - started) * 1000
    result.transcript = transcript.text
    if not transcript.text.strip():
        result.status = "no_speech"
        return result
    history = history or ChatHistory(conversation.full_system_prompt)
    history.add_user(transcript.text)
    result.llm_first_token_ms, result.llm_first_chunk_ms, chunks = await first_chunk(
        chat, history, conversation.first_chunk_words
    )
    chunk = result.first_chunk = chunks[0] if chunks else ""
    chunk_ms = result.llm_first_chunk_ms
    if chunk_ms is None:
        result.status = "no_reply"
        return result
    started = time.perf_counter()
    await asyncio.to_thread(tts.synthesize, chunk, urgent=True)  # a reply's first chunk
    result.tts_ms = tts_ms = (time.perf_counter() - started) * 1000
    start_of_reply = pause_ms if conversation.speculate else result.endpoint_ms
    result.floor_ms = max(result.endpoint_ms, start_of_reply + result.stt_ms + chunk_ms + tts_ms)
    return result


async def measure(
    corpus: list[Utterance],
    models_dir: Path,
    profile: str | None,
    conversation: ConversationConfig | None = None,
    repeats: int = 1,
) -> list[FloorResult]:
    """Load the profile's models (warmed up, as the server does) and time every utterance,
    one at a time, as one conversation per pass; `repeats` passes."""
    conversation = conversation or ConversationConfig()
    config = AppConfig(
        models=ModelConfig(models_dir=models_dir, profile=profile, offline=True),
        conversation=conversation,
    )
    runtime = await Runtime.load(config)
    try:
        results = []
        for _ in range(repeats):
            history = ChatHistory(conversation.full_system_prompt)
            for utterance in corpus:
                results.append(
                    await measure_one(
                        utterance,
                        transcriber=runtime.transcriber,
                        chat=runtime.chat,
                        tts=runtime.tts,
                        conversation=conversation,
                        history=history,
                        turn_model=runtime.turn_model,
                    )
                )
    finally:
        await runtime.aclose()
    return results


def floor_by_utterance(results: list[FloorResult]) -> dict[str, float]:
    """Median floor of each utterance."""
    values: dict[str, list[float]] = {}
    for result in results:
        if result.floor_ms is not None:
            values.setdefault(result.utterance, []).append(result.floor_ms)
    return {name: float(np.median(v)) for name, v in values.items()}


__all__ = ["FloorResult", "endpoint", "floor_by_utterance", "measure", "measure_one"]
