"""Fault injection for tests: the real models (the tiny synthetic set), wrapped so that chosen
calls fail or hang where the real work happens, in the stage's worker thread.

`FaultyRuntime` is the real `Runtime`; each session attached while it holds a `SessionFaults`
plan gets its models wrapped by that plan, the others get the plain shared models.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from agent.app.runtime import Runtime
from agent.audio import Int16Array
from agent.dialogue.turn import TurnDeps
from agent.stages.llm.llama import ChatModel
from agent.stages.stt import Transcriber, Transcript
from agent.stages.tts import Synthesizer
from agent.threads import run_in
from agent.transport.session import Session


class Fault(enum.Enum):
    ERROR = "error"
    """The call raises `InjectedFault`."""
    HANG = "hang"
    """The worker thread blocks until the script is released, then carries on."""


class InjectedFault(RuntimeError):
    pass


@dataclass
class FaultScript:
    """Faults for one stage's successive calls: call n gets `faults[n]`; None, or a call past
    the end, is healthy. For the LLM the fault fires once `after_tokens` tokens with text
    have been streamed (0: before the first)."""

    faults: list[Fault | None] = field(default_factory=list)
    after_tokens: int = 0
    max_hang_s: float = 30.0
    """A safety net: a hang that nobody releases ends by itself after this long."""
    tokens_before_fault: int | None = None
    """Tokens with text the LLM had streamed when its fault fired."""
    calls: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)
    """Set while a worker is blocked in a hang."""
    hangs_ended: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> Fault | None:
        with self._lock:
            n, self.calls = self.calls, self.calls + 1
        return self.faults[n] if n < len(self.faults) else None

    def fire(self, fault: Fault, stage: str) -> None:
        """Called in the worker thread at the point of failure."""
        if fault is Fault.ERROR:
            raise InjectedFault(f"injected {stage} fault")
        self.hanging.set()
        try:
            self.release.wait(self.max_hang_s)
        finally:
            self.hanging.clear()
            self.hangs_ended += 1


@dataclass
class SessionFaults:
    stt: FaultScript = field(default_factory=FaultScript)
    llm: FaultScript = field(default_factory=FaultScript)
    tts: FaultScript = field(default_factory=FaultScript)

    def release_all(self) -> None:
        for script in (self.stt, self.llm, self.tts):
            script.release.set()


class FaultyTranscriber:
    """The real Transcriber's call, in the real STT pool, with a fault first."""

    def __init__(self, inner: Transcriber, script: FaultScript, executor: Any) -> None:
        self._inner = inner
        self._script = script
        self._executor = executor

    async def transcribe(self, audio: Int16Array) -> Transcript:
        return await run_in(self._executor, self._transcribe_blocking, audio)

    def _transcribe_blocking(self, audio: Int16Array) -> Transcript:
        fault = self._script.next()
        if fault is not None:
            self._script.fire(fault, "speech recognition")
        return self._inner.transcribe_blocking(audio)


class FaultySynthesizer:
    """The real voice, failing or hanging on chosen chunks (called in the TTS worker)."""

    def __init__(self, inner: Synthesizer, script: FaultScript) -> None:
        self._inner = inner
        self._script = script

    @property
    def sample_rate(self) -> int:
        return self._inner.sample_rate

    def synthesize(self, text: str, *, urgent: bool = False) -> Int16Array:
        fault = self._script.next()
        if fault is not None:
            self._script.fire(fault, "speech synthesis")
        return self._inner.synthesize(text, urgent=urgent)


class FaultyLlama:
    """A llama_cpp.Llama whose streamed completions fail or hang after some tokens. Wrapped
    by a real ChatModel, so generation, cancellation and the stop flag are the real ones."""

    def __init__(self, llama: Any, script: FaultScript) -> None:
        self._llama = llama
        self._script = script

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)

    def create_completion(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        fault = self._script.next()
        if fault is not None and self._script.after_tokens == 0:
            self._script.fire(fault, "language model")  # before the first token
            fault = None
        return self._stream(self._llama.create_completion(**kwargs), fault)

    def _stream(self, stream: Iterator[dict[str, Any]], fault: Fault | None) -> Iterator[Any]:
        delivered = 0  # tokens with text: a byte-level BPE token can be half a character
        try:
            for chunk in stream:
                if fault is not None and delivered >= self._script.after_tokens:
                    self._script.tokens_before_fault = delivered
                    self._script.fire(fault, "language model")  # mid-stream
                    fault = None
                delivered += bool(chunk["choices"][0]["text"])
                yield chunk
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()


class FaultyRuntime(Runtime):
    """The real runtime; `plans` (set after load) hold one entry per session to attach:
    a `SessionFaults` wraps that session's models, None leaves it healthy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plans: list[SessionFaults | None] = []
        self._private: list[tuple[ChatModel, Any]] = []

    def turn_deps(self, session: Session) -> TurnDeps:
        deps = super().turn_deps(session)
        plan = self.plans.pop(0) if self.plans else None
        if plan is None:
            return deps
        return replace(
            deps,
            transcriber=FaultyTranscriber(self.transcriber, plan.stt, self.executors.stt),
            chat=self._private_chat(plan.llm),
            tts=FaultySynthesizer(self.tts, plan.tts),
        )

    def _private_chat(self, script: FaultScript) -> ChatModel:
        """A ChatModel of its own over its own Llama of the same file: a faulty session must
        not hold the healthy sessions' model (one Llama, one generation at a time)."""
        from llama_cpp import Llama

        llama = Llama(model_path=str(self.resolved.llm), n_ctx=2048, n_threads=1, verbose=False)
        chat = ChatModel(
            FaultyLlama(llama, script),
            max_reply_tokens=self.config.conversation.max_reply_tokens,
        )
        self._private.append((chat, llama))
        return chat

    def close(self) -> None:
        super().close()
        for chat, llama in self._private:
            chat.close()
            llama.close()


__all__ = ["Fault", "FaultScript", "FaultyRuntime", "InjectedFault", "SessionFaults"]
