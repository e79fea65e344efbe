"""Process-wide models and worker threads, shared by every session; warm-up before the
first offer. `Runtime` is the pipeline the signaling app attaches sessions to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import AppConfig, ConversationConfig
from agent.dialogue.conversation import Conversation
from agent.dialogue.listening import Listening
from agent.dialogue.turn import TurnDeps
from agent.metrics import Metrics
from agent.models import ModelError
from agent.models.device import DeviceInfo, detect_device
from agent.models.loaders import (
    cpu_threads,
    load_llama,
    load_mms,
    load_piper,
    load_vad_model,
    load_whisper,
    load_whisper_decoder,
)
from agent.models.resolve import ResolvedModels, models_health, resolve_models
from agent.stages.llm import ChatBackend
from agent.stages.llm.build_check import check_llama_build
from agent.stages.llm.llama import ChatModel
from agent.stages.llm.remote import RemoteChatModel
from agent.stages.llm.unpack import Weights, weights_for_cpu
from agent.stages.stt import Transcriber
from agent.stages.tts import Synthesizer
from agent.stages.tts.mms import MmsSynthesizer
from agent.stages.tts.piper import PiperSynthesizer
from agent.stages.whisper_window import DecoderChoice
from agent.threads import CountingExecutor, run_in
from agent.transport.session import AudioSink, Session
from agent.turntaking.echo import EchoMask
from agent.turntaking.endpoint import hangs_on_last_word
from agent.turntaking.smart_turn import SmartTurn, load_smart_turn
from agent.turntaking.vad import StreamingVad, VadSettings

log = logging.getLogger(__name__)


@dataclass
class Executors:
    """One pool per stage, so a reply's TTS runs while its LLM still generates and one
    session's VAD never waits behind another's transcription."""

    vad: ThreadPoolExecutor
    stt: CountingExecutor
    tts: CountingExecutor
    tts_urgent: CountingExecutor
    """The chunks the listener waits for (agent/stages/tts): one session's first chunk
    never queues behind another's long later sentence."""
    turn: CountingExecutor
    """The end-of-turn model: one call at a time, each with a core."""

    @classmethod
    def create(cls) -> Executors:
        return cls(
            vad=ThreadPoolExecutor(2, thread_name_prefix="vad"),
            stt=CountingExecutor(1, thread_name_prefix="stt"),
            tts=CountingExecutor(1, thread_name_prefix="tts"),
            tts_urgent=CountingExecutor(1, thread_name_prefix="tts-urgent"),
            turn=CountingExecutor(1, thread_name_prefix="turn"),
        )

    def only_an_urgent_voice_busy(self) -> bool:
        """A chunk the listener waits for is being spoken, on every core: nothing else runs
        (no other session's turn on its way to the LLM, whose first token a wait for the
        voice would push back behind the rest of this reply)."""
        return self.tts_urgent.busy and self.idle_but_the_urgent_voice()

    def idle_but_the_urgent_voice(self) -> bool:
        """No recognition, end-of-turn or later chunk's voice queued or running: a chunk
        the listener waits for may take every core (agent/stages/tts/piper.py)."""
        return not (self.stt.busy or self.tts.busy or self.turn.busy)

    def models_idle(self) -> bool:
        """No speech recognition, synthesis or end-of-turn call queued or running (the
        VAD's windows are too small to count)."""
        return not (self.stt.busy or self.tts_urgent.busy or self.tts.busy or self.turn.busy)

    def shutdown(self) -> None:
        for pool in (self.vad, self.stt, self.tts_urgent, self.tts, self.turn):
            pool.shutdown(wait=True, cancel_futures=True)


def session_vad(
    conversation: ConversationConfig, *, semantic: bool, echo: EchoMask | None = None
) -> StreamingVad:
    """One session's streaming VAD: the shared Silero model (checked and loaded once per
    process) behind this session's own recurrent state, with the conversation's settings
    (`semantic`: an end-of-turn model decides, the utterance lasts until its ceiling) and
    the agent's own echo masked out. Everything that listens as a session does (the
    benchmarks' floor included) makes its VAD here."""
    settings = VadSettings.from_config(conversation, semantic=semantic)
    return StreamingVad(settings, load_vad_model(), echo=echo)


def _voice_takes_the_cores(tts: Synthesizer, device: DeviceInfo) -> bool:
    """Piper speaks the chunks the listener waits for on every core of the CPU the LLM
    decodes on: the LLM waits for those rather than contend (agent/stages/llm/cores.py)."""
    if not isinstance(tts, PiperSynthesizer) or device.tts_gpu or device.llm_gpu:
        return False
    threads = tts.cpu_threads
    return threads == 0 or threads >= cpu_threads()


def load_synthesizer(
    resolved: ResolvedModels, device: DeviceInfo, *, every_core: bool = False
) -> Synthesizer:
    """`every_core`: a Piper voice on the CPU speaks the chunks the listener waits for on
    every core, on a session of its own (the LLM in this process waits for it:
    agent/stages/llm/cores.py); the later chunks beside the LLM on `shared_threads`."""
    if resolved.tts == "mms":
        model, tokenizer, torch_device = load_mms(resolved.voice, device)
        return MmsSynthesizer(model, tokenizer, torch_device)
    voice = load_piper(resolved.voice, device)
    if not every_core or device.tts_gpu:
        return PiperSynthesizer(voice)
    return PiperSynthesizer(voice, urgent_voice=load_piper(resolved.voice, device, every_core=True))


async def load_chat(config: AppConfig, resolved: ResolvedModels, device: DeviceInfo) -> ChatBackend:
    """The language model: the inference server at `--llm-url` (checked, not warmed up
    yet), else llama.cpp in this process."""
    models, conversation = config.models, config.conversation
    if models.llm_url is not None:
        return await RemoteChatModel.connect(
            models.llm_url,
            model=models.llm_model,
            api_key=models.llm_api_key,
            context_tokens=models.llm_context,
            max_reply_tokens=conversation.max_reply_tokens,
            stage_timeout_s=conversation.stage_timeout_s,
            system_prompt=conversation.full_system_prompt,
        )
    assert resolved.llm is not None  # resolve_models gives a GGUF without --llm-url
    if device.llm_gpu or not models.llm_unpack:
        return await load_local_chat(config, Weights(resolved.llm, "as published"), device)
    weights = await asyncio.to_thread(weights_for_cpu, resolved.llm, models.models_dir)
    try:
        return await load_local_chat(config, weights, device)
    except Exception as exc:
        if weights.unpacked_from is None:
            raise
        # A copy whose header reads but which llama.cpp refuses (a bad disk; a cut file
        # fails the header check already) must not keep the server from starting: it is
        # removed, and made again on the next start.
        log.warning(
            "could not load the F16 copy %s (%s): removed it, loading %s as published",
            weights.path,
            exc,
            weights.unpacked_from,
        )
        with contextlib.suppress(OSError):
            weights.path.unlink()
        why = f"as published (its F16 copy did not load: {exc})"
        return await load_local_chat(config, Weights(weights.unpacked_from, why), device)


async def load_local_chat(config: AppConfig, weights: Weights, device: DeviceInfo) -> ChatModel:
    models = config.models
    no_repack = False
    if not device.llm_gpu:
        no_repack = await asyncio.to_thread(check_llama_build, weights.path, models.models_dir)
    llama = await asyncio.to_thread(
        load_llama, weights.path, models.llm_context, device, no_repack=no_repack
    )
    return ChatModel(
        llama, max_reply_tokens=config.conversation.max_reply_tokens, weights=weights.description
    )


def _load_recognizer(path: Path, device: DeviceInfo) -> tuple[Any, Any | None]:
    """Whisper, and its one-thread decoder where it may decode faster (chosen at warm-up)."""
    return load_whisper(path, device), load_whisper_decoder(path, device)


class Runtime:
    def __init__(
        self,
        config: AppConfig,
        resolved: ResolvedModels,
        device: DeviceInfo,
        *,
        whisper: Any,
        chat: ChatBackend,
        tts: Synthesizer,
        turn_model: SmartTurn | None = None,
        whisper_decoder: Any | None = None,
    ) -> None:
        self.config = config
        self.resolved = resolved
        self.device = device
        self.metrics = Metrics()
        self.executors = Executors.create()
        self.chat = chat
        if isinstance(chat, ChatModel):
            chat.share_cores(
                self.executors.models_idle,
                self.executors.only_an_urgent_voice_busy
                if _voice_takes_the_cores(tts, device)
                else None,
            )
        if isinstance(tts, PiperSynthesizer):
            tts.share_cores(self.executors.idle_but_the_urgent_voice)
        self.tts = tts
        self.turn_model = turn_model
        self.transcriber = Transcriber(
            whisper,
            config.conversation.language.whisper,
            self.executors.stt,
            score_last_word=hangs_on_last_word if turn_model is not None else None,
            one_thread_decoder=whisper_decoder,
        )
        self.warmup_s: dict[str, float] = {}
        self.stt_decoder: DecoderChoice | None = None

    @classmethod
    async def load(cls, config: AppConfig) -> Runtime:
        """Resolve (fetching if allowed), load and warm up every model, off the event loop."""
        resolved = await asyncio.to_thread(
            resolve_models, config.models, config.conversation.language
        )
        device = detect_device(config.models.device)
        log.info("device: %s", device.description)
        if config.models.llm_url is not None:
            # The server is asked first: a wrong URL fails in a second, not after the models load.
            chat = await load_chat(config, resolved, device)
            try:
                (whisper, decoder), tts = await asyncio.gather(
                    asyncio.to_thread(_load_recognizer, resolved.stt, device),
                    asyncio.to_thread(load_synthesizer, resolved, device),
                )
            except BaseException:
                await chat.aclose()
                raise
        else:
            (whisper, decoder), tts, chat = await asyncio.gather(
                asyncio.to_thread(_load_recognizer, resolved.stt, device),
                asyncio.to_thread(load_synthesizer, resolved, device, every_core=True),
                load_chat(config, resolved, device),
            )
        turn_model = None
        if resolved.turn is not None:
            try:
                turn_model = await asyncio.to_thread(load_smart_turn, resolved.turn)
            except ModelError as exc:
                # The end-of-turn model is optional: a broken one is reported, not fatal.
                log.warning("%s: turns end on silence alone", exc)
                resolved = replace(
                    resolved, turn=None, turn_note=f"{exc}: turns end on silence alone"
                )
        runtime = cls(
            config,
            resolved,
            device,
            whisper=whisper,
            whisper_decoder=decoder,
            chat=chat,
            tts=tts,
            turn_model=turn_model,
        )
        try:
            await runtime.warm_up()
        except BaseException:
            await runtime.aclose()
            raise
        return runtime

    async def warm_up(self) -> None:
        """Run each model once so the first user's first turn is as fast as later ones."""
        silence = np.zeros(16_000, dtype=np.int16)
        started = time.perf_counter()
        await run_in(self.executors.vad, load_vad_model().probability, silence[:512])
        self.warmup_s["vad"] = time.perf_counter() - started
        started = time.perf_counter()
        await self.transcriber.transcribe(silence)
        self.warmup_s["stt"] = time.perf_counter() - started
        self.stt_decoder = await run_in(self.executors.stt, self.transcriber.choose_decoder)
        if self.stt_decoder is not None:
            log.info(
                "Whisper decodes on %s (a probe took %.0f ms on one thread, %.0f ms on all %d)",
                "one thread" if self.stt_decoder.one_thread else "the model's threads",
                self.stt_decoder.one_thread_ms,
                self.stt_decoder.model_threads_ms,
                cpu_threads(),
            )
        self.warmup_s["llm"] = await self.chat.warm_up()
        started = time.perf_counter()
        await run_in(self.executors.tts, self.tts.synthesize, "Hello.")
        await run_in(self.executors.tts_urgent, self.tts.synthesize, "Hello.", urgent=True)
        self.warmup_s["tts"] = time.perf_counter() - started
        if self.turn_model is not None:
            started = time.perf_counter()
            await run_in(self.executors.turn, self.turn_model.probability, silence)
            self.warmup_s["turn"] = time.perf_counter() - started
        log.info(
            "warm-up done: %s",
            ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.warmup_s.items()),
        )

    def attach(self, session: Session) -> AudioSink:
        self.metrics.sessions.inc()
        conversation = self.config.conversation
        echo = None
        if conversation.echo_mask:
            echo = EchoMask()
            session.output.tap(echo.played)
        return Conversation(
            config=conversation,
            listening=Listening(
                vad=session_vad(conversation, semantic=self.turn_model is not None, echo=echo),
                vad_executor=self.executors.vad,
                turn_model=self.turn_model,
                turn_executor=self.executors.turn,
                echo=echo,
            ),
            deps=self.turn_deps(session),
            metrics=self.metrics,
            on_fatal=session.request_close,  # too many failed turns: close the session
        )

    def turn_deps(self, session: Session) -> TurnDeps:
        """The models and outputs one session's turns use (tests wrap them to inject faults)."""
        return TurnDeps(
            transcriber=self.transcriber,
            chat=self.chat,
            tts=self.tts,
            tts_executor=self.executors.tts,
            tts_urgent_executor=self.executors.tts_urgent,
            track=session.output,
            emit=session.send_event,
        )

    def describe(self) -> dict[str, Any]:
        report = models_health(self.resolved, self.device)
        report["llm"] = {**report["llm"], **self.chat.describe()}
        conversation = self.config.conversation
        turn = report["turn"]
        assert isinstance(turn, dict)
        if self.turn_model is not None:
            calls = self.turn_model.calls
            turn["pause_ms"] = conversation.pause_ms
            turn["max_ms"] = conversation.endpoint_max_ms
            turn["calls"] = calls
            turn["mean_call_ms"] = (
                round(self.turn_model.seconds / calls * 1000, 1) if calls else None
            )
        else:
            turn["silence_ms"] = conversation.endpoint_ms
        if self.stt_decoder is not None:
            stt = report["stt"]
            assert isinstance(stt, dict)
            stt.update(self.stt_decoder.as_dict())
        report["speculation"] = conversation.speculate
        report["warmup_ms"] = {k: round(v * 1000, 1) for k, v in self.warmup_s.items()}
        return report

    def close(self) -> None:
        """Release the worker threads and an in-process model (a remote model's client
        needs the event loop: `aclose`)."""
        self.executors.shutdown()
        self.chat.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.executors.shutdown)
        await self.chat.aclose()
