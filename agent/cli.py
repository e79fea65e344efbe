"""The `voice-agent` command: serve, models, bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from agent import __version__
from agent.config import AppConfig, config_from_args
from agent.config.env import apply_environment
from agent.config.flags import add_server_arguments
from agent.models.cli import register as register_models
from benchmarks.cli import register as register_bench

log = logging.getLogger("voice-agent")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-agent",
        description="A local, real-time voice agent: talk to it in your browser.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"voice-agent {__version__}")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help="logging level",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="start the agent and print the URL to open",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_server_arguments(serve)
    serve.set_defaults(func=run_serve)

    register_models(commands)
    register_bench(commands)
    apply_environment(parser)  # every option of every command, from VOICE_AGENT_<OPTION>
    return parser


def run_serve(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"voice-agent: {exc}", file=sys.stderr)
        return 2
    from agent.app.server import serve

    return asyncio.run(serve(config))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # faster-whisper logs every transcription at INFO; one line per turn is noise here.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    return int(args.func(args))


__all__ = ["AppConfig", "build_parser", "main"]
