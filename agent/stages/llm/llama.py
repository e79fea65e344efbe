"""Streaming chat over one shared llama-cpp-python model.

The model's context is used by one generation at a time (a `Llama` must not be used by two
threads at once); turns queue for it and their wait is measured. A reply that has written a
whole sentence gives the model to a turn waiting for it and then queues to write on (its
sentence is being spoken meanwhile): the waiting turn's first words no longer wait for the
rest of another session's reply. Each conversation's evaluated prefix, the reply written so
far included, is kept across other conversations' turns (agent/stages/llm/contexts.py).
Prompts are rendered with the GGUF's own chat template and tokenized here, so the tokens
llama.cpp must evaluate (the part not covered by the cached prefix) are known exactly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.stages.chunker import CLOSERS, SENTENCE_MARKS
from agent.stages.llm import DeltaCallback, Generation, Message, llama_internals
from agent.stages.llm.contexts import DEFAULT_BUDGET_BYTES, ConversationContexts
from agent.stages.llm.cores import VOICE_WAIT_BUDGET_S, CoreSharing, Flag
from agent.threads import wait_uncancelled

log = logging.getLogger(__name__)

TRIM_TO = 0.6
"""Share of the context a trimmed history is cut down to."""

# Chat formats whose end-of-turn marker is not the vocabulary's end-of-generation token.
EXTRA_STOPS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")

_SENTENCE_BOUNDARY = re.compile(f"[{re.escape(SENTENCE_MARKS)}][{re.escape(CLOSERS)}]*\\s+(?=\\S)")
"""A sentence's end with the next word begun: the speech chunker has cut there (it decides
a cut on the characters after the mark), so the sentence is already on its way to the voice."""


class ChatModel:
    """The shared model: prompt rendering, token accounting and one generation at a time."""

    def __init__(
        self,
        llama: Any,
        *,
        max_reply_tokens: int,
        temperature: float = 0.7,
        saved_context_bytes: int = DEFAULT_BUDGET_BYTES,
        weights: str = "as published",
    ) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = llama
        self._contexts = ConversationContexts(llama, saved_context_bytes)
        self.max_reply_tokens = max_reply_tokens
        self._temperature = temperature
        self.weights = weights
        self._lock = asyncio.Lock()
        self._queued = _Queued()
        threads = int(llama.n_threads)
        self._cores = CoreSharing(own_threads=threads, every_core=threads)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm")
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError("the GGUF has no chat template (tokenizer.chat_template)")
        self._bos = _token_text(llama, llama.token_bos())
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=_token_text(llama, llama.token_eos()), bos_token=self._bos
        )

    def share_cores(
        self, others_idle: Callable[[], bool], voice_busy: Callable[[], bool] | None = None
    ) -> None:
        """Decode on every core while `others_idle()`, and wait while `voice_busy()`
        (agent/stages/llm/cores.py). Until this is called, the model keeps to the threads
        it was loaded with (`agent.models.loaders.shared_threads`: a core stays free)."""
        self._cores = CoreSharing(
            own_threads=self._cores.own_threads,
            every_core=max(self._cores.own_threads, os.cpu_count() or 1),
            others_idle=others_idle,
            voice_busy=voice_busy,
        )

    @property
    def saved_context_bytes(self) -> int:
        """Memory held by conversations' saved contexts (see agent/stages/llm/contexts.py)."""
        return self._contexts.saved_bytes

    @property
    def n_ctx(self) -> int:
        return int(self._llama.n_ctx())

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def describe(self) -> dict[str, Any]:
        return {"backend": "in-process", "context": self.n_ctx, "weights": self.weights}

    def render(self, messages: Sequence[Message]) -> list[int]:
        prompt: str = self._formatter(messages=list(messages)).prompt  # type: ignore[arg-type]
        add_bos = not (self._bos and prompt.startswith(self._bos))
        tokens: list[int] = self._llama.tokenize(prompt.encode(), add_bos=add_bos, special=True)
        return tokens

    def fit(self, messages: list[Message]) -> tuple[list[int], int]:
        """(tokens of `messages`, number of oldest messages dropped). When the prompt and a
        full reply do not fit in the context, the oldest exchanges (never the system prompt
        or the latest user message) are dropped down to TRIM_TO of the context, not just
        below it: every trim changes the prompt's beginning, so the whole prompt must be
        evaluated again (tens of seconds on a CPU), and trimming deep makes that rare."""
        budget = self.n_ctx - self.max_reply_tokens
        tokens = self.render(messages)
        if len(tokens) <= budget:
            return tokens, 0
        target = int(budget * TRIM_TO)
        dropped = 0
        while len(tokens) > target and len(messages) > 2:
            count = 2 if len(messages) > 3 else 1
            del messages[1 : 1 + count]
            dropped += count
            tokens = self.render(messages)
        return (tokens[-budget:] if len(tokens) > budget else tokens), dropped

    async def generate(
        self,
        messages: list[Message],
        on_delta: DeltaCallback,
        max_tokens: int | None = None,
        *,
        conversation: object | None = None,
    ) -> Generation:
        """Stream a reply to `messages`; `on_delta` gets each text piece on the event loop.
        Cancelling stops generation at the next token. Trims `messages` in place to fit.
        `conversation` (any object living as long as the conversation, such as its
        ChatHistory) keeps its evaluated prefix while other conversations take turns. Once
        a sentence is written, the model goes to a turn that waits for it, and the reply
        queues to write on; `queue_wait_s` is the wait for its first words."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        enough = threading.Event()
        first_token_at: list[float] = []

        def deliver(piece: str) -> None:
            if enough.is_set():
                return  # already in flight when the caller had enough
            if not first_token_at:
                first_token_at.append(time.time())
            if on_delta(piece):
                enough.set()

        def emit(piece: str) -> None:
            loop.call_soon_threadsafe(deliver, piece)

        reply = _Reply()
        queue_wait = 0.0
        try:
            while True:  # one pass per hold of the model; a reply gives it up between sentences
                waited_from = time.perf_counter()
                self._queued.turns += 1
                try:
                    await self._lock.acquire()
                finally:
                    self._queued.turns -= 1
                if not reply.passes:
                    queue_wait = time.perf_counter() - waited_from
                else:
                    reply.paused_s += time.perf_counter() - waited_from
                try:
                    future = loop.run_in_executor(
                        self._executor,
                        self._generate,
                        messages,
                        emit,
                        _Either(stop, enough),
                        max_tokens,
                        conversation,
                        reply,
                    )
                    await wait_uncancelled(future, on_cancel=stop.set)
                finally:
                    self._lock.release()
                if not reply.gave_way or enough.is_set():
                    break
        finally:
            stop.set()
        if reply.passes > 1:
            log.debug(
                "a reply gave the model to another turn %d times, waited %.0f ms for it back",
                reply.passes - 1,
                reply.paused_s * 1000,
            )
        # Every delta was scheduled with call_soon_threadsafe before the worker returned, so
        # the loop ran them all before this coroutine resumed.
        return Generation(
            text=reply.text,
            prompt_tokens=len(reply.prompt),
            prompt_tokens_evaluated=reply.evaluated,
            completion_tokens=reply.completion_tokens,
            queue_wait_s=queue_wait,
            first_token_at=first_token_at[0] if first_token_at else None,
            finish_reason="enough" if enough.is_set() else reply.finish,
            dropped_messages=reply.dropped,
        )

    def _generate(
        self,
        messages: list[Message],
        emit: Callable[[str], None],
        stop: _Either,
        max_tokens: int | None,
        conversation: object | None,
        reply: _Reply,
    ) -> None:
        """One pass of `reply` on the model: to its end, or to a sentence's end when
        another turn waits for the model (`reply.gave_way`)."""
        llama = self._llama
        if not reply.passes:
            reply.prompt, reply.dropped = self.fit(messages)
        reply.passes += 1
        reply.gave_way = False
        tokens = reply.prompt + self._written_tokens(reply.text)
        self._contexts.switch_to(conversation, tokens)
        self._take_cores(stop, reply.voice_wait)
        if stop.is_set():  # cancelled while the voice spoke
            return
        cached = llama.longest_token_prefix(llama_internals.evaluated_tokens(llama), tokens)
        # llama.cpp replays one token when the whole prompt is cached, to refresh logits.
        reply.evaluated += max(len(tokens) - cached, 1)
        left = (max_tokens or self.max_reply_tokens) - reply.completion_tokens
        if left <= 0:
            reply.finish = "length"
            return
        written_before = len(reply.text)
        stream = llama.create_completion(
            prompt=tokens,
            max_tokens=left,
            temperature=self._temperature,
            top_p=0.9,
            stream=True,
            stop=list(EXTRA_STOPS),
        )
        try:
            for chunk in stream:
                if stop.is_set():
                    break
                reply.completion_tokens += 1
                choice = chunk["choices"][0]
                finish = choice.get("finish_reason")
                reply.finish = finish or reply.finish
                piece = choice["text"]
                if piece:
                    reply.text += piece
                    emit(piece)
                if (
                    finish is None
                    and self._queued.is_set()
                    and reply.sentence_since(written_before)
                ):
                    reply.gave_way = True
                    break
                self._take_cores(stop, reply.voice_wait)  # for the next token's decode
        finally:
            stream.close()

    def _written_tokens(self, text: str) -> list[int]:
        """The reply written so far, as prompt tokens to write on from (the model's own
        tokens, as a rule: only a different split of the same text is evaluated again)."""
        if not text:
            return []
        tokens: list[int] = self._llama.tokenize(text.encode(), add_bos=False, special=False)
        return tokens

    def _take_cores(self, stop: _Either, voice_wait: _VoiceWait) -> None:
        """Before a decode, in the worker: let the voice finish its chunk (within this
        generation's budget, and unless another turn waits for the model: holding the
        model while the voice speaks would delay that turn's first token), then take
        every core if nothing else runs."""
        waited = self._cores.wait_for_voice(_Either(stop, self._queued), voice_wait.left_s)
        voice_wait.left_s -= waited
        threads = self._cores.threads()
        if (threads, threads) != (self._llama.n_threads, self._llama.n_threads_batch):
            llama_internals.set_threads(self._llama, threads, threads)

    async def warm_up(self) -> float:
        started = time.perf_counter()
        await self.generate(
            [{"role": "system", "content": "Warm up."}, {"role": "user", "content": "Hi"}],
            lambda _: None,
            max_tokens=4,
        )
        return time.perf_counter() - started


@dataclass
class _VoiceWait:
    left_s: float
    """What is left of this generation's budget for waiting on the voice."""


@dataclass
class _Reply:
    """A reply across its passes on the model (written in the model's worker thread)."""

    prompt: list[int] = field(default_factory=list)
    dropped: int = 0
    text: str = ""
    evaluated: int = 0
    completion_tokens: int = 0
    finish: str = "stop"
    passes: int = 0
    gave_way: bool = False
    """The last pass ended at a sentence's end, for a turn that waited for the model."""
    paused_s: float = 0.0
    voice_wait: _VoiceWait = field(default_factory=lambda: _VoiceWait(VOICE_WAIT_BUDGET_S))

    def sentence_since(self, offset: int) -> bool:
        """A sentence of the reply ended past `offset` (where this pass began), and the next
        has begun."""
        return _SENTENCE_BOUNDARY.search(self.text, offset) is not None


class _Queued:
    """Turns waiting for the model (changed on the event loop, read by the worker)."""

    def __init__(self) -> None:
        self.turns = 0

    def is_set(self) -> bool:
        return self.turns > 0


class _Either:
    """Set when either event is: the turn was cancelled, or it has enough of the reply."""

    def __init__(self, *events: Flag) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self._events)


def _token_text(llama: Any, token: int) -> str:
    if token < 0:
        return ""
    return llama_internals.token_text(llama, token)
