"""Every setting, as frozen dataclasses, and `config_from_args`: the one place that turns
the parsed flags (agent/config/flags.py; agent/config/env.py gives each its `VOICE_AGENT_*`
environment variable) into them. Everything else receives these dataclasses."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import platformdirs

from agent.config import checks
from agent.languages import ENGLISH, Language, parse_language
from agent.stages.chunker import FIRST_CHUNK_MAX_WORDS

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. The user speaks {language}; always reply in "
    "{language}, in one or two short sentences of plain spoken {language}, without lists, "
    "markdown or emoji."
)
"""Tuned on SmolLM2-135M, the `small` model: over 180 replies to 20 questions at three
temperatures, no reply in another language, where the prompt this replaced answered a few
English questions in broken French or German ("What is the capital of France?" among them).
Naming the user's language, and asking for it, is what keeps a small model in it."""


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
    jitter_frames: int = 1
    """20 ms frames the inbound audio's jitter buffer holds before releasing one (aiortc's
    own is 4). The audio goes to the VAD, not to a loudspeaker: jitter only bunches it."""
    replica_id: str | None = None
    """Prefix of this server's session ids (`r1-…`), so that a load balancer in front of
    several replicas sends `DELETE /sessions/{id}` to the one that owns the session."""


@dataclass(frozen=True)
class ModelConfig:
    models_dir: Path = field(default_factory=lambda: default_models_dir())
    profile: str | None = None
    """`None` picks `gpu` when llama.cpp has CUDA and a GPU is present, else `cpu` (and,
    on a first start that cannot reach the hub, `small` from the package index)."""
    offline: bool = False
    stt: Path | None = None
    llm: Path | None = None
    voice: Path | None = None
    turn: Path | None = None
    """The end-of-turn model (Smart Turn ONNX); `None`: the profile's."""
    device: str = "auto"
    llm_context: int = 4096
    llm_unpack: bool = True
    """On a CPU, load a tiny quantized GGUF unpacked to F16 (agent/stages/llm/unpack.py)."""
    tts: str = "auto"
    """`piper`, `mms`, or `auto`: Piper for English, MMS-TTS for any other language."""
    llm_url: str | None = None
    """Base URL of an OpenAI-compatible inference server (`http://host:8000/v1`) that runs
    the language model instead of llama.cpp in this process; None: in this process."""
    llm_model: str | None = None
    """The model the server is asked for; None: the first one it lists."""
    llm_api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ConversationConfig:
    language: Language = ENGLISH
    """Whisper's language, the language the LLM is told to answer in, the MMS voice."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    vad_threshold: float = 0.5
    vad_start_ms: int = 100
    preroll_ms: int = 300
    pause_ms: int = 96
    """Silence that makes a pause: the end-of-turn model is asked, the reply is prepared.
    96 (three VAD windows) rather than 128: on the turns benchmark's 20 complete and 20
    unfinished utterances (small set, 2-core EPYC) the end-of-turn delay p50 fell from 271
    to 202 ms and mouth-to-transcript from 498 to 466, for one false end of turn (a list
    with a 1.5 s pause, "Please add apples, pears.", which the model and the words both
    called finished; at 128 the same decision came too late to be heard)."""
    endpoint_ms: int = 300
    """Silence that ends a turn without an end-of-turn model."""
    endpoint_max_ms: int = 2000
    """With the end-of-turn model: silence after which a turn it called incomplete ends."""
    endpoint_words_ms: int = 500
    """With the end-of-turn model: silence after which a turn it called incomplete ends when
    its transcript reads as a finished sentence (0: never earlier than the ceiling). 500, as
    LiveKit's minimum endpointing delay: replayed on the pauses of 80 utterances
    (benchmarks/results/turns/pauses), 400, 500 and 700 ms gave the same false ends of turn
    (with unsure endings at 700)."""
    endpoint_unsure_ms: int = 700
    """With the end-of-turn model: silence after which a turn it called complete ends when
    the words' ending is unsure (a last word Whisper may have made up after a phrase cut
    short: "a table for it."); longer than `endpoint_words_ms`, since the voice said done but
    the words may not be (0: never earlier than the ceiling)."""
    turn_threshold: float = 0.5
    """P(complete) from Smart Turn at or above which a pause ends the turn."""
    speculate: bool = True
    """Prepare the reply (transcript, first clause, its audio) in the pause, held until the
    turn is decided."""
    max_utterance_s: float = 20.0
    barge_in_ms: int = 200
    """Voiced overlap with the agent's speech after which its words are checked."""
    barge_in_max_ms: int = 900
    """Voiced overlap that interrupts the agent whatever it says."""
    echo_mask: bool = True
    """Do not take the agent's own voice, coming back through the microphone, for speech."""
    max_reply_sentences: int = 3
    """The reply ends after this many sentences (0: no cap)."""
    max_reply_tokens: int = 160
    """Token ceiling of a reply; an unfinished last sentence is dropped."""
    first_chunk_words: int = FIRST_CHUNK_MAX_WORDS
    """Most words of a reply's first spoken chunk, cut earlier at a clause mark: the listener
    waits in silence while the LLM writes it and the voice speaks it."""
    stage_timeout_s: float = 30.0
    """A model stage with no progress for this long fails its turn (LLM: no token)."""
    max_failed_turns: int = 3
    """Failed turns in a row after which the session is closed; 0 never closes it."""

    @property
    def full_system_prompt(self) -> str:
        """The system prompt, with the conversation's language in its `{language}` places;
        a prompt without any gets the instruction to answer in that language at its end."""
        if "{language}" in self.system_prompt:
            return self.system_prompt.replace("{language}", self.language.reply_name)
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
        jitter_frames=args.jitter_frames,
        replica_id=checks.check_replica_id(args.replica_id),
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
        turn=args.turn_model,
        device=args.device,
        llm_context=args.llm_context,
        llm_unpack=not args.llm_as_published,
        tts=args.tts,
        llm_url=checks.check_llm_url(args.llm_url),
        llm_model=args.llm_model,
        llm_api_key=args.llm_api_key,
    )
    if models.llm_url is not None and models.llm is not None:
        raise ValueError(
            "--llm (a GGUF run in this process) and --llm-url (a server) contradict each "
            "other: give one"
        )
    if args.stage_timeout <= 0 or args.max_failed_turns < 0:
        raise ValueError("--stage-timeout must be > 0 and --max-failed-turns >= 0")
    conversation = ConversationConfig(
        language=parse_language(args.language),
        system_prompt=args.system_prompt,
        vad_threshold=args.vad_threshold,
        vad_start_ms=args.vad_start_ms,
        pause_ms=args.pause_ms,
        endpoint_ms=args.endpoint_ms,
        endpoint_max_ms=args.endpoint_max_ms,
        endpoint_words_ms=args.endpoint_words_ms,
        endpoint_unsure_ms=args.endpoint_unsure_ms,
        turn_threshold=args.turn_threshold,
        speculate=not args.no_speculation,
        max_utterance_s=args.max_utterance_s,
        barge_in_ms=args.barge_in_ms,
        barge_in_max_ms=args.barge_in_max_ms,
        echo_mask=not args.no_echo_mask,
        max_reply_sentences=args.max_reply_sentences,
        max_reply_tokens=args.max_reply_tokens,
        first_chunk_words=args.first_chunk_words,
        stage_timeout_s=args.stage_timeout,
        max_failed_turns=args.max_failed_turns,
    )
    checks.check_turn_taking(conversation)
    return AppConfig(server=server, models=models, conversation=conversation)
