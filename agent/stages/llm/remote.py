"""Streaming chat over an OpenAI-compatible inference server's `/v1/chat/completions` (vLLM,
SGLang, llama.cpp's llama-server, llama-cpp-python's `llama_cpp.server`), through the
`openai` package's async client.

- Closing a stream closes its HTTP connection, which is how these servers learn that nobody
  listens any more and stop generating. It is closed when the turn is cancelled (barge-in,
  the stage timeout) and as soon as `on_delta` has enough.
- The client's own retries are off: a refusal (429 or 503) is retried once here, after the
  server's Retry-After when that is short enough for a conversation, then it is an error.
- Each conversation sends a stable random key, as the `user` field and in the headers that
  routers in front of several engines read (AFFINITY_HEADERS), so that a conversation stays
  on the engine that holds its prefix cache.
- The server owns the tokenizer. A prompt's size is what the server reports at the end of
  the stream (asked for with `stream_options.include_usage`); servers that report nothing
  get an estimate from the text, at a tokens-per-character rate learnt from the last report
  (conservative until there is one). Trimming to the server's context uses the estimate.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
import weakref
from typing import Any, cast

from openai import APIConnectionError, APIError, APIStatusError, AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from agent.models import ModelError
from agent.stages.llm import DeltaCallback, Generation, Message
from agent.stages.llm.llama import TRIM_TO
from agent.stages.llm.wire import (
    ChunkContent,
    RemoteModelError,
    error_cause,
    read_chunk,
    redact,
    retry_after_s,
)

log = logging.getLogger(__name__)

AFFINITY_HEADER = "X-Session-Affinity"
AFFINITY_HEADERS = (AFFINITY_HEADER, "X-SMG-Routing-Key")
"""Our own header (vLLM production-stack router: `--routing-logic session --session-key
x-session-affinity`; HAProxy: `balance hdr(X-Session-Affinity)`), and the SGLang model
gateway's default routing-key header."""
REFUSAL_STATUSES = (429, 503)
MAX_RETRY_WAIT_S = 5.0
"""The longest Retry-After a turn waits for; a longer one fails the turn at once."""
DEFAULT_RETRY_WAIT_S = 1.0
"""The wait before the one retry when a refusal says nothing about when to come back."""
TIMEOUT_MARGIN_S = 5.0
"""The client's own timeout is the stage timeout plus this: in a turn the stage deadline
fires first, with its usual message; the client's bounds what no deadline watches."""
DEFAULT_TOKENS_PER_CHAR = 0.5
"""Before the server reported any usage: two characters a token, about twice what BPE
tokenizers use for English, so the first estimates trim early rather than overflow."""
MESSAGE_OVERHEAD_TOKENS = 8
"""Tokens a chat template adds per message (role markers, separators)."""
ESTIMATE_MARGIN = 1.1
CALIBRATION_MIN_CHARS = 200
"""A report on less text than this is mostly template overhead: no rate is learnt from it."""


class RemoteChatModel:
    """One OpenAI-compatible server, shared by every session of this process."""

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        url: str,
        model: str,
        context_tokens: int,
        context_from: str,
        max_reply_tokens: int,
        timeout_s: float,
        system_prompt: str = "Warm up.",
        temperature: float = 0.7,
        max_retry_wait_s: float = MAX_RETRY_WAIT_S,
    ) -> None:
        self._client = client
        self.url = redact(url)
        self.model = model
        self.context_tokens = context_tokens
        self._context_from = context_from
        self.max_reply_tokens = max_reply_tokens
        self._timeout_s = timeout_s
        self._system_prompt = system_prompt
        self._temperature = temperature
        self.max_retry_wait_s = max_retry_wait_s
        self._tokens_per_char = DEFAULT_TOKENS_PER_CHAR
        self._usage_reported: bool | None = None
        self._keys: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()
        self.requests = 0
        self.failed_requests = 0
        self.last_error: str | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        model: str | None,
        api_key: str | None,
        context_tokens: int,
        max_reply_tokens: int,
        stage_timeout_s: float,
        system_prompt: str = "Warm up.",
    ) -> RemoteChatModel:
        """Ask the server which models it serves (and, where it says, their context);
        ModelError with a message for the user when it cannot be reached or lacks `model`."""
        timeout_s = stage_timeout_s + TIMEOUT_MARGIN_S
        client = AsyncOpenAI(
            base_url=url, api_key=api_key or "no-key", max_retries=0, timeout=timeout_s
        )
        shown = redact(url)
        try:
            page = await client.models.list()
        except APIConnectionError as exc:
            await client.close()
            raise ModelError(
                f"cannot reach the LLM server at {shown} ({error_cause(exc)}): start it, or check "
                "--llm-url"
            ) from exc
        except APIStatusError as exc:
            await client.close()
            raise ModelError(
                f"the LLM server at {shown} answered {exc.status_code} to GET /models: "
                f"{exc.message}" + (" (check --llm-api-key)" if exc.status_code == 401 else "")
            ) from exc
        listed = [entry.model_dump() for entry in page.data]
        names = [str(entry.get("id")) for entry in listed]
        chosen = model or (names[0] if names else None)
        if chosen is None or chosen not in names:
            await client.close()
            raise ModelError(
                f"the LLM server at {shown} serves {', '.join(names) or 'no model'}"
                + (f", not --llm-model {model}" if model else "")
            )
        reported = next(e.get("max_model_len") for e in listed if str(e.get("id")) == chosen)
        context_from = "server" if isinstance(reported, int) else "--llm-context"
        log.info(
            "LLM: %s on %s, context %d tokens (from %s)",
            chosen,
            shown,
            reported if isinstance(reported, int) else context_tokens,
            context_from,
        )
        return cls(
            client,
            url=url,
            model=chosen,
            context_tokens=reported if isinstance(reported, int) else context_tokens,
            context_from=context_from,
            max_reply_tokens=max_reply_tokens,
            timeout_s=timeout_s,
            system_prompt=system_prompt,
        )

    # -- prompt size -----------------------------------------------------------------

    def estimate_tokens(self, messages: list[Message]) -> int:
        chars = sum(len(m["content"]) for m in messages)
        return math.ceil(
            chars * self._tokens_per_char * ESTIMATE_MARGIN
        ) + MESSAGE_OVERHEAD_TOKENS * len(messages)

    def _learn(self, messages: list[Message], prompt_tokens: int) -> None:
        chars = sum(len(m["content"]) for m in messages)
        text_tokens = prompt_tokens - MESSAGE_OVERHEAD_TOKENS * len(messages)
        if chars >= CALIBRATION_MIN_CHARS and text_tokens > 0:
            self._tokens_per_char = text_tokens / chars

    def fit(self, messages: list[Message], reply_tokens: int) -> int:
        """Drop the oldest exchanges (never the system prompt or the latest user message)
        when the prompt and a full reply may not fit the server's context, down to TRIM_TO
        of it as `ChatModel.fit` does (a trim changes the prompt's start, so the server's
        prefix cache misses once). Returns the number of messages dropped."""
        budget = self.context_tokens - reply_tokens
        if self.estimate_tokens(messages) <= budget:
            return 0
        target = int(budget * TRIM_TO)
        dropped = 0
        while self.estimate_tokens(messages) > target and len(messages) > 2:
            count = 2 if len(messages) > 3 else 1
            del messages[1 : 1 + count]
            dropped += count
        return dropped

    def affinity_key(self, conversation: object | None) -> str:
        """A random key per conversation: stable across its turns, unrelated to others."""
        if conversation is None:
            return secrets.token_urlsafe(16)
        key = self._keys.get(conversation)
        if key is None:
            key = self._keys[conversation] = secrets.token_urlsafe(16)
        return key

    # -- generation ------------------------------------------------------------------

    async def generate(
        self,
        messages: list[Message],
        on_delta: DeltaCallback,
        max_tokens: int | None = None,
        *,
        conversation: object | None = None,
    ) -> Generation:
        """Stream a reply to `messages`; `on_delta` gets each text piece. Cancelling closes
        the stream. Trims `messages` in place to fit the server's context."""
        reply_tokens = max_tokens or self.max_reply_tokens
        dropped = self.fit(messages, reply_tokens)
        self.requests += 1
        try:
            return await self._generate(
                messages, on_delta, reply_tokens, self.affinity_key(conversation), dropped
            )
        except RemoteModelError as exc:
            self.failed_requests += 1
            self.last_error = str(exc)
            raise

    async def _generate(
        self,
        messages: list[Message],
        on_delta: DeltaCallback,
        reply_tokens: int,
        key: str,
        dropped: int,
    ) -> Generation:
        stream, waited = await self._open(messages, reply_tokens, key)
        pieces: list[str] = []
        first_token_at: float | None = None
        finish: str | None = None
        content_chunks = 0
        last = ChunkContent("", None, None, None, None)
        usage = last
        try:
            while True:
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except APIConnectionError as exc:
                    if finish is not None:
                        break  # the reply was complete; only its usage or [DONE] is lost
                    raise RemoteModelError(
                        f"the LLM server's stream broke off ({error_cause(exc)})"
                    ) from exc
                except APIError as exc:
                    raise RemoteModelError(f"the LLM server failed mid-stream: {exc}") from exc
                except ValueError as exc:  # a data line that is not JSON
                    raise RemoteModelError(f"malformed chunk from the LLM server: {exc}") from exc
                last = read_chunk(chunk)
                if last.prompt_tokens is not None:
                    usage = last
                finish = last.finish_reason or finish
                if not last.text:
                    continue
                content_chunks += 1
                if first_token_at is None:
                    first_token_at = time.time()
                pieces.append(last.text)
                if on_delta(last.text):
                    finish = "enough"
                    break
        finally:
            await stream.close()  # a stream closed early closes its connection
        if finish is None:
            raise RemoteModelError(
                "the LLM server ended the stream before the reply was complete (no finish_reason)"
            )
        if usage.prompt_tokens is not None:
            self._usage_reported = True
        elif finish != "enough":  # a stream read to its end, without usage
            self._usage_reported = False
        if usage.prompt_tokens is not None:
            self._learn(messages, usage.prompt_tokens)
            prompt_tokens = usage.prompt_tokens
            evaluated = prompt_tokens - (usage.cached_tokens or 0)
        else:
            prompt_tokens = evaluated = self.estimate_tokens(messages)
        return Generation(
            text="".join(pieces),
            prompt_tokens=prompt_tokens,
            prompt_tokens_evaluated=max(evaluated, 0),
            completion_tokens=usage.completion_tokens or content_chunks,
            queue_wait_s=waited,
            first_token_at=first_token_at,
            finish_reason=finish,
            dropped_messages=dropped,
            prompt_tokens_estimated=usage.prompt_tokens is None,
        )

    async def _open(
        self, messages: list[Message], reply_tokens: int, key: str
    ) -> tuple[AsyncStream[ChatCompletionChunk], float]:
        """The response stream, after at most one retry of a refusal; (stream, seconds
        waited for the retry)."""
        waited = 0.0
        for attempt in (1, 2):
            try:
                stream = await self._client.chat.completions.create(
                    model=self.model,
                    messages=cast(list[ChatCompletionMessageParam], messages),
                    stream=True,
                    stream_options={"include_usage": True},
                    max_tokens=reply_tokens,
                    temperature=self._temperature,
                    top_p=0.9,
                    user=key,
                    extra_headers={header: key for header in AFFINITY_HEADERS},
                )
                return stream, waited
            except APIStatusError as exc:
                refused = exc.status_code in REFUSAL_STATUSES
                if not refused or attempt == 2:
                    again = " again, after one retry" if attempt == 2 else ""
                    raise RemoteModelError(
                        f"the LLM server answered {exc.status_code}{again}: {exc.message}"
                    ) from exc
                wait = retry_after_s(exc.response.headers)
                wait = DEFAULT_RETRY_WAIT_S if wait is None else wait
                if wait > self.max_retry_wait_s:
                    raise RemoteModelError(
                        f"the LLM server is busy ({exc.status_code}) and asks to retry after "
                        f"{wait:g} s, longer than a turn waits ({self.max_retry_wait_s:g} s)"
                    ) from exc
                log.info("LLM server refused (%d); retrying in %.1f s", exc.status_code, wait)
                await asyncio.sleep(wait)
                waited += wait
            except APIConnectionError as exc:
                raise RemoteModelError(
                    f"cannot reach the LLM server at {self.url} ({error_cause(exc)})"
                ) from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    async def warm_up(self) -> float:
        """A short generation, so that a server that lists models but cannot generate is
        found before the first offer (ModelError). It starts with the conversations' system
        prompt: servers that cache prefixes (vLLM, SGLang, llama-server) then hold it for
        every conversation's first turn."""
        started = time.perf_counter()
        messages = [
            {"role": "system", "content": self._system_prompt},
            {"role": "user", "content": "Hi"},
        ]
        try:
            async with asyncio.timeout(self._timeout_s):
                await self.generate(messages, lambda _: None, max_tokens=4)
        except (RemoteModelError, TimeoutError) as exc:
            reason = str(exc) or f"no reply in {self._timeout_s:g} s"
            raise ModelError(f"the LLM server at {self.url} failed to generate: {reason}") from exc
        return time.perf_counter() - started

    def describe(self) -> dict[str, Any]:
        usage = {None: "not seen yet", True: "reported", False: "estimated"}
        return {
            "backend": "remote",
            "url": self.url,
            "model": self.model,
            "context": self.context_tokens,
            "context_from": self._context_from,
            "prompt_tokens": usage[self._usage_reported],
            "affinity": {"user_field": True, "headers": list(AFFINITY_HEADERS)},
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "last_error": self.last_error,
        }

    def close(self) -> None:
        """Nothing to release without the event loop: `aclose` closes the client."""

    async def aclose(self) -> None:
        await self._client.close()
