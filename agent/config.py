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

from agent import config_checks as checks
from agent.languages import ENGLISH, Language, parse_language

ENV_PREFIX = "VOICE_AGENT_"

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant in a spoken conversation. "
    "Answer in one or two short sentences of plain speech. "
    "Never use markdown, lists, code, emoji or symbols: everything you write is read aloud."
)


# Container and VM bridges: a browser can never reach them, and their candidates would
# reveal the host's internal topology in every answer.
DEFAULT_ICE_EXCLUDE_INTERFACES = (
    "docker*",
    "br-*",
    "veth*",
    "virbr*",
    "cni*",
    "flannel*",
    "cali*",
    "lxcbr*",
    "podman*",
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
    token: str | None = None
    """Bearer token for offers, DELETE /sessions and /metrics; `None`: no token needed."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed besides the server's own (`https://agent.example.org`)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks whose X-Forwarded-For/-Proto/-Host headers are believed."""
    max_sessions_per_ip: int = 3
    """Live sessions per client address (IPv6: per /64); 0: no per-address cap."""
    offer_rate_per_min: float = 20.0
    """Offers per minute per client address, sustained; 0: no rate limit."""
    offer_burst: int = 5
    idle_timeout_s: float = 300.0
    """A session without user speech for this long is closed; 0: never."""
    max_session_s: float = 7200.0
    """Longest session; 0: unlimited."""
    ice_exclude_interfaces: tuple[str, ...] = DEFAULT_ICE_EXCLUDE_INTERFACES
    """fnmatch patterns of network interfaces that never offer ICE candidates."""
    ice_allow_link_local: bool = False


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
    tts: str = "auto"
    """`piper`, `mms`, or `auto`: Piper for English, MMS-TTS for any other language."""


@dataclass(frozen=True)
class ConversationConfig:
    language: Language = ENGLISH
    """Whisper's language, the language the LLM is told to answer in, the MMS voice."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    vad_threshold: float = 0.5
    vad_start_ms: int = 100
    preroll_ms: int = 300
    endpoint_ms: int = 300
    max_utterance_s: float = 20.0
    barge_in_ms: int = 200
    max_reply_tokens: int = 160
    stage_timeout_s: float = 30.0
    """A model stage with no progress for this long fails its turn (LLM: no token)."""
    max_failed_turns: int = 3
    """Failed turns in a row after which the session is closed; 0 never closes it."""

    @property
    def full_system_prompt(self) -> str:
        """The system prompt and the instruction to answer in the conversation's language."""
        return self.system_prompt + self.language.reply_instruction()


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
            username, credential = item.get("username"), item.get("credential")
            if not all(v is None or isinstance(v, str) for v in (username, credential)):
                raise ValueError("--ice-servers: 'username' and 'credential' must be strings")
            servers.append(IceServer(url_tuple, username, credential))
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


def _flag_env(name: str) -> bool:
    return _env(name, "").lower() not in ("", "0", "false", "no")


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
    net.add_argument(
        "--ice-exclude-interfaces",
        default=_env("ice_exclude_interfaces", ",".join(d_server.ice_exclude_interfaces)),
        help="comma-separated interface name patterns that never offer ICE candidates "
        "(empty: none)",
    )
    net.add_argument(
        "--ice-allow-link-local",
        action="store_true",
        default=_flag_env("ice_allow_link_local"),
        help="offer link-local addresses (169.254/16, fe80::/10) as ICE candidates",
    )
    add_access_arguments(parser, d_server)

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
    models.add_argument(
        "--voice",
        type=Path,
        default=None,
        help="Piper voice (.onnx file) or MMS-TTS model (directory)",
    )
    models.add_argument(
        "--tts",
        choices=("auto", "piper", "mms"),
        default=_env("tts", d_models.tts),
        help="speech synthesis: Piper, MMS-TTS (needs the 'mms' extra), or auto (Piper for "
        "English, MMS-TTS for other languages)",
    )
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
        default=_env("language", d_conv.language.whisper or "en"),
        help="language of the whole conversation: speech recognition, replies and voice "
        "(a Whisper code such as fr, or an ISO 639-3 code such as fra for MMS-TTS)",
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
    conv.add_argument(
        "--stage-timeout",
        type=float,
        default=float(_env("stage_timeout", str(d_conv.stage_timeout_s))),
        help="seconds a model stage may go without progress (STT or a TTS chunk: the call; "
        "the LLM: between tokens) before its turn fails",
    )
    conv.add_argument(
        "--max-failed-turns",
        type=int,
        default=int(_env("max_failed_turns", str(d_conv.max_failed_turns))),
        help="failed turns in a row after which a session is closed (0: never)",
    )


def add_access_arguments(parser: argparse.ArgumentParser, d_server: ServerConfig) -> None:
    access = parser.add_argument_group("access and limits")
    access.add_argument(
        "--token",
        default=_env("token", "") or None,
        help="secret the page and clients must send (the page reads it from ?token= in its "
        "URL); required to bind to an address other than loopback, unless --no-auth. "
        "Prefer VOICE_AGENT_TOKEN: other local users can read command lines",
    )
    access.add_argument(
        "--no-auth",
        action="store_true",
        default=_flag_env("no_auth"),
        help="allow binding to a non-loopback address without --token",
    )
    access.add_argument(
        "--allowed-origins",
        default=_env("allowed_origins", ""),
        help="comma-separated browser origins allowed besides the server's own",
    )
    access.add_argument(
        "--trusted-proxies",
        default=_env("trusted_proxies", ""),
        help="comma-separated addresses or networks of reverse proxies whose X-Forwarded-* "
        "headers are believed",
    )
    access.add_argument(
        "--max-sessions-per-ip",
        type=int,
        default=int(_env("max_sessions_per_ip", str(d_server.max_sessions_per_ip))),
        help="live sessions per client address (IPv6: per /64), 0 for no cap; more get 429",
    )
    access.add_argument(
        "--offer-rate",
        type=float,
        default=float(_env("offer_rate", str(d_server.offer_rate_per_min))),
        help="offers per minute per client address, 0 for no limit; more get 429",
    )
    access.add_argument(
        "--offer-burst",
        type=int,
        default=int(_env("offer_burst", str(d_server.offer_burst))),
        help="offers a client address may make at once before --offer-rate applies",
    )
    access.add_argument(
        "--idle-timeout",
        type=float,
        default=float(_env("idle_timeout", str(d_server.idle_timeout_s))),
        help="seconds without user speech before a session is closed, 0 for never",
    )
    access.add_argument(
        "--max-session-s",
        type=float,
        default=float(_env("max_session_s", str(d_server.max_session_s))),
        help="longest session in seconds, 0 for unlimited",
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
        token=checks.check_token(args.token),
        allowed_origins=checks.parse_origins(args.allowed_origins),
        trusted_proxies=checks.parse_networks(args.trusted_proxies),
        max_sessions_per_ip=args.max_sessions_per_ip,
        offer_rate_per_min=args.offer_rate,
        offer_burst=args.offer_burst,
        idle_timeout_s=args.idle_timeout,
        max_session_s=args.max_session_s,
        ice_exclude_interfaces=checks.split_list(args.ice_exclude_interfaces),
        ice_allow_link_local=args.ice_allow_link_local,
    )
    checks.check_access(server.host, server.token, args.no_auth, bool(server.trusted_proxies))
    checks.check_limits(
        max_sessions_per_ip=server.max_sessions_per_ip,
        offer_rate_per_min=server.offer_rate_per_min,
        offer_burst=server.offer_burst,
        idle_timeout_s=server.idle_timeout_s,
        max_session_s=server.max_session_s,
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
        tts=args.tts,
    )
    if args.stage_timeout <= 0 or args.max_failed_turns < 0:
        raise ValueError("--stage-timeout must be > 0 and --max-failed-turns >= 0")
    conversation = ConversationConfig(
        language=parse_language(args.language),
        system_prompt=args.system_prompt,
        vad_threshold=args.vad_threshold,
        vad_start_ms=args.vad_start_ms,
        endpoint_ms=args.endpoint_ms,
        max_utterance_s=args.max_utterance_s,
        barge_in_ms=args.barge_in_ms,
        max_reply_tokens=args.max_reply_tokens,
        stage_timeout_s=args.stage_timeout,
        max_failed_turns=args.max_failed_turns,
    )
    return AppConfig(server=server, models=models, conversation=conversation)


def ice_servers_as_dicts(servers: tuple[IceServer, ...]) -> list[Mapping[str, object]]:
    return [
        {"urls": list(s.urls), "username": s.username, "credential": s.credential} for s in servers
    ]
