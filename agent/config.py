"""Every setting, read in one place: command-line flags, with `VOICE_AGENT_*` environment
variables as their defaults. Everything else receives these frozen dataclasses."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import platformdirs

ENV_PREFIX = "VOICE_AGENT_"

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant in a spoken conversation. "
    "Answer in one or two short sentences of plain speech. "
    "Never use markdown, lists, code, emoji or symbols: everything you write is read aloud."
)


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 8
    max_offer_bytes: int = 64 * 1024
    keepalive_timeout_s: float = 10.0
    ice_servers: tuple[IceServer, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    models_dir: Path = field(default_factory=lambda: default_models_dir())
    profile: str | None = None
    """`None` picks `gpu` when llama.cpp has CUDA and a GPU is present, else `cpu`."""
    offline: bool = False
    stt: Path | None = None
    llm: Path | None = None
    voice: Path | None = None
    device: str = "auto"
    llm_context: int = 4096


@dataclass(frozen=True)
class ConversationConfig:
    language: str = "en"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    vad_threshold: float = 0.5
    vad_start_ms: int = 100
    preroll_ms: int = 300
    endpoint_ms: int = 300
    max_utterance_s: float = 20.0
    barge_in_ms: int = 200
    max_reply_tokens: int = 160


@dataclass(frozen=True)
class AppConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    models: ModelConfig = field(default_factory=ModelConfig)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)


def default_models_dir() -> Path:
    return Path(platformdirs.user_cache_dir("voice-agent")) / "models"


def parse_ice_servers(text: str) -> tuple[IceServer, ...]:
    """`stun:host:port,turn:user:pass@host:port?transport=udp`, or a JSON list of
    RTCIceServer objects (`[{"urls": [...], "username": ..., "credential": ...}]`)."""
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--ice-servers: invalid JSON: {exc}") from exc
        servers = []
        for item in items:
            if not isinstance(item, dict) or "urls" not in item:
                raise ValueError("--ice-servers: each JSON entry needs 'urls'")
            urls = item["urls"]
            url_tuple = (urls,) if isinstance(urls, str) else tuple(str(u) for u in urls)
            servers.append(IceServer(url_tuple, item.get("username"), item.get("credential")))
        return tuple(servers)
    servers = []
    for raw in text.split(","):
        url = raw.strip()
        if not url:
            continue
        scheme, _, rest = url.partition(":")
        if scheme not in ("stun", "stuns", "turn", "turns") or not rest:
            raise ValueError(f"--ice-servers: {url!r} is not a stun:, stuns:, turn: or turns: URL")
        username = credential = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, _, password = userinfo.partition(":")
            username, credential = unquote(user), unquote(password)
        servers.append(IceServer((f"{scheme}:{rest}",), username, credential))
    return tuple(servers)


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `voice-agent serve`. Each default can also come from VOICE_AGENT_<FLAG>."""
    d_server, d_models, d_conv = ServerConfig(), ModelConfig(), ConversationConfig()
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=_env("host", d_server.host), help="address to bind")
    net.add_argument(
        "--port", type=int, default=int(_env("port", str(d_server.port))), help="port to listen on"
    )
    net.add_argument(
        "--max-sessions",
        type=int,
        default=int(_env("max_sessions", str(d_server.max_sessions))),
        help="concurrent sessions; more offers get 503",
    )
    net.add_argument(
        "--ice-servers",
        default=_env("ice_servers", ""),
        help="STUN/TURN servers: comma-separated URLs (turn:user:pass@host:port) or JSON; "
        "none by default",
    )
    net.add_argument(
        "--keepalive-timeout",
        type=float,
        default=float(_env("keepalive_timeout", str(d_server.keepalive_timeout_s))),
        help="seconds without a ping on the events channel before a session is closed",
    )

    models = parser.add_argument_group("models")
    add_models_dir_argument(models)
    models.add_argument(
        "--profile",
        choices=("tiny", "cpu", "gpu"),
        default=_env("profile", "") or None,
        help="model profile (default: gpu when llama.cpp has CUDA and a GPU is present, else cpu)",
    )
    models.add_argument(
        "--offline",
        action="store_true",
        default=_env("offline", "") not in ("", "0", "false"),
        help="use local model files only; never download",
    )
    models.add_argument("--stt", type=Path, default=None, help="faster-whisper model directory")
    models.add_argument("--llm", type=Path, default=None, help="GGUF chat model file")
    models.add_argument("--voice", type=Path, default=None, help="Piper voice (.onnx)")
    models.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=_env("device", d_models.device),
        help="where models run",
    )
    models.add_argument(
        "--llm-context",
        type=int,
        default=int(_env("llm_context", str(d_models.llm_context))),
        help="llama.cpp context length in tokens",
    )

    conv = parser.add_argument_group("conversation")
    conv.add_argument(
        "--language",
        default=_env("language", d_conv.language),
        help="language of the conversation (ISO 639-1 code)",
    )
    conv.add_argument(
        "--system-prompt",
        default=_env("system_prompt", d_conv.system_prompt),
        help="instructions for the language model",
    )
    conv.add_argument(
        "--vad-threshold",
        type=float,
        default=float(_env("vad_threshold", str(d_conv.vad_threshold))),
        help="Silero speech probability that counts as speech",
    )
    conv.add_argument(
        "--vad-start-ms",
        type=int,
        default=int(_env("vad_start_ms", str(d_conv.vad_start_ms))),
        help="speech needed before a user turn starts",
    )
    conv.add_argument(
        "--endpoint-ms",
        type=int,
        default=int(_env("endpoint_ms", str(d_conv.endpoint_ms))),
        help="silence that ends a user turn",
    )
    conv.add_argument(
        "--max-utterance-s",
        type=float,
        default=float(_env("max_utterance_s", str(d_conv.max_utterance_s))),
        help="an utterance this long is ended by force",
    )
    conv.add_argument(
        "--barge-in-ms",
        type=int,
        default=int(_env("barge_in_ms", str(d_conv.barge_in_ms))),
        help="user speech over the agent that interrupts it",
    )
    conv.add_argument(
        "--max-reply-tokens",
        type=int,
        default=int(_env("max_reply_tokens", str(d_conv.max_reply_tokens))),
        help="longest reply, in tokens",
    )


def add_models_dir_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--models",
        type=Path,
        default=Path(_env("models", str(default_models_dir()))),
        help="models directory",
    )


def config_from_args(args: argparse.Namespace) -> AppConfig:
    server = ServerConfig(
        host=args.host,
        port=args.port,
        max_sessions=args.max_sessions,
        keepalive_timeout_s=args.keepalive_timeout,
        ice_servers=parse_ice_servers(args.ice_servers),
    )
    models = ModelConfig(
        models_dir=args.models,
        profile=args.profile,
        offline=args.offline,
        stt=args.stt,
        llm=args.llm,
        voice=args.voice,
        device=args.device,
        llm_context=args.llm_context,
    )
    conversation = ConversationConfig(
        language=args.language,
        system_prompt=args.system_prompt,
        vad_threshold=args.vad_threshold,
        vad_start_ms=args.vad_start_ms,
        endpoint_ms=args.endpoint_ms,
        max_utterance_s=args.max_utterance_s,
        barge_in_ms=args.barge_in_ms,
        max_reply_tokens=args.max_reply_tokens,
    )
    return AppConfig(server=server, models=models, conversation=conversation)


def ice_servers_as_dicts(servers: tuple[IceServer, ...]) -> list[Mapping[str, object]]:
    return [
        {"urls": list(s.urls), "username": s.username, "credential": s.credential} for s in servers
    ]
