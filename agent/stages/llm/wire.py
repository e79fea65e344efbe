"""What OpenAI-compatible servers send, read defensively: streamed chat chunks (text,
finish reason, usage and cached prompt tokens as vLLM, SGLang and llama-server report
them), `Retry-After`, and the words of a connection error; and URLs without credentials."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class RemoteModelError(RuntimeError):
    """The server failed a request; the message says how, for the turn's `error` event."""


def redact(url: str) -> str:
    """`url` without the user and password it may carry."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def retry_after_s(headers: Any) -> float | None:
    """Seconds a refusal asks the client to wait (`Retry-After`: seconds or an HTTP date;
    `retry-after-ms`, which some servers send), or None."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class ChunkContent:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    cached_tokens: int | None
    completion_tokens: int | None


def read_chunk(chunk: Any) -> ChunkContent:
    """The text, finish reason and usage of one streamed chunk. The client does not
    validate what the server sends: a chunk of the wrong shape is a RemoteModelError."""
    try:
        data = chunk.model_dump(warnings=False)
    except Exception as exc:  # pydantic raises whatever the odd content makes it raise
        raise RemoteModelError(f"malformed chunk from the LLM server: {exc}") from exc
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise RemoteModelError(f"malformed chunk from the LLM server (no choices): {data}")
    text, finish = "", None
    if choices:
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        if not isinstance(delta, dict) or not isinstance(content, str | None):
            raise RemoteModelError(f"malformed chunk from the LLM server: {choice}")
        if finish is not None and not isinstance(finish, str):
            raise RemoteModelError(f"malformed finish_reason from the LLM server: {finish}")
        text = content or ""
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details") or {}
    timings = data.get("timings") if isinstance(data.get("timings"), dict) else {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None:
        cached = timings.get("cache_n")  # llama-server: prompt tokens taken from its cache
    return ChunkContent(
        text=text,
        finish_reason=finish,
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        cached_tokens=_int_or_none(cached),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
    )


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_cause(exc: BaseException) -> str:
    """The innermost cause's words ("Connection refused"), not the client's generic
    "Connection error."."""
    inner: BaseException = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = str(inner) or type(inner).__name__
    return text if inner is not exc else (str(exc) or type(exc).__name__)
