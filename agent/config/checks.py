"""Parsers and checks for the access and network settings: pure functions of the values
that `agent/config/` read, raising ValueError with the flag's name in the message.
Nothing here reads flags or the environment."""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent.stages.chunker import FIRST_CHUNK_MIN_WORDS

if TYPE_CHECKING:
    from agent.config import ConversationConfig

LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
MIN_TOKEN_CHARS = 16
"""Long enough that guessing over the network is hopeless; `openssl rand -hex 16` gives 32."""


def split_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def is_loopback_host(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname or "" (every address): assume it is reachable from outside


def check_token(token: str | None) -> str | None:
    if token is None:
        return None
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError("--token must be printable text without spaces")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"--token must have at least {MIN_TOKEN_CHARS} characters: "
            "use --token $(openssl rand -hex 16)"
        )
    return token


def normalize_origin(text: str) -> str:
    """`scheme://host[:port]` in lower case, the default port left out, as browsers send
    the Origin header."""
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or port == -1
    ):
        raise ValueError(f"{text!r} is not an origin such as https://agent.example.org")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")


def parse_origins(text: str) -> tuple[str, ...]:
    try:
        return tuple(normalize_origin(item) for item in split_list(text))
    except ValueError as exc:
        raise ValueError(f"--allowed-origins: {exc}") from None


def parse_networks(text: str) -> tuple[str, ...]:
    networks = []
    for item in split_list(text):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(
                f"--trusted-proxies: {item!r} is not an address or network (10.0.0.0/8)"
            ) from None
    return tuple(networks)


def check_access(host: str, token: str | None, no_auth: bool, trusted_proxies: bool) -> None:
    """Refuse a configuration that would expose the agent without a token by accident."""
    if token is not None and no_auth:
        raise ValueError("--token and --no-auth contradict each other: give one")
    if token is not None or no_auth:
        return
    if not is_loopback_host(host):
        raise ValueError(
            f"--host {host or '(every address)'} makes the agent reachable from other "
            "machines: give --token SECRET (for example --token $(openssl rand -hex 16), "
            "then open http://HOST:PORT/?token=SECRET) or, on a network you trust, --no-auth"
        )
    if trusted_proxies:
        raise ValueError(
            "--trusted-proxies means a reverse proxy exposes the agent: give --token SECRET "
            "or, on a network you trust, --no-auth"
        )


def check_limits(
    *,
    max_sessions_per_ip: int,
    offer_rate_per_min: float,
    offer_burst: int,
    idle_timeout_s: float,
    max_session_s: float,
) -> None:
    for flag, value in (
        ("--max-sessions-per-ip", max_sessions_per_ip),
        ("--offer-rate", offer_rate_per_min),
        ("--idle-timeout", idle_timeout_s),
        ("--max-session-s", max_session_s),
    ):
        if value < 0:
            raise ValueError(f"{flag} must be 0 (off) or positive, not {value}")
    if offer_rate_per_min > 0 and offer_burst < 1:
        raise ValueError(f"--offer-burst must be at least 1, not {offer_burst}")


def check_turn_taking(conversation: ConversationConfig) -> None:
    """The silences must come in order: a pause before the end of a turn."""
    if not 0 <= conversation.pause_ms < conversation.endpoint_ms:
        raise ValueError(
            f"--pause-ms ({conversation.pause_ms}) must be shorter than --endpoint-ms "
            f"({conversation.endpoint_ms})"
        )
    if conversation.endpoint_max_ms < conversation.endpoint_ms:
        raise ValueError("--endpoint-max-ms must be at least --endpoint-ms")
    if not 0 <= conversation.endpoint_words_ms <= conversation.endpoint_max_ms:
        raise ValueError("--endpoint-words-ms must be between 0 and --endpoint-max-ms")
    if not 0 <= conversation.endpoint_unsure_ms <= conversation.endpoint_max_ms:
        raise ValueError("--endpoint-unsure-ms must be between 0 and --endpoint-max-ms")
    if not 0.0 < conversation.turn_threshold < 1.0:
        raise ValueError("--turn-threshold must be between 0 and 1")
    if not 0 < conversation.barge_in_ms <= conversation.barge_in_max_ms:
        raise ValueError("need 0 < --barge-in-ms <= --barge-in-max-ms")
    if conversation.max_reply_sentences < 0 or conversation.max_reply_tokens < 1:
        raise ValueError("--max-reply-sentences must be >= 0 and --max-reply-tokens >= 1")
    if conversation.first_chunk_words < FIRST_CHUNK_MIN_WORDS:
        raise ValueError(f"--first-chunk-words must be >= {FIRST_CHUNK_MIN_WORDS}")


REPLICA_ID = re.compile(r"[A-Za-z0-9]{1,16}")


def check_replica_id(replica_id: str | None) -> str | None:
    """Letters and digits only: the id and a dash start every session id of the replica."""
    if not replica_id:
        return None
    if not REPLICA_ID.fullmatch(replica_id):
        raise ValueError(
            f"--replica-id {replica_id!r}: use 1 to 16 letters and digits (such as r1)"
        )
    return replica_id


def check_llm_url(url: str | None) -> str | None:
    """An http(s) base URL; a URL without a path gets the OpenAI-compatible `/v1`."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"--llm-url {url!r} is not an http:// or https:// URL such as http://127.0.0.1:8000/v1"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"--llm-url {url!r}: give the base URL, without a query")
    base = url.strip().rstrip("/")
    return base if parts.path.strip("/") else base + "/v1"
