"""agent/config/env.py: every option of every command has its VOICE_AGENT_<OPTION> variable,
read in one place, parsed like the command line, with one parser for booleans."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import build_parser
from agent.config import config_from_args
from agent.config.env import apply_environment, parse_bool, variable_for
from benchmarks import load, loopback, soak, tts
from benchmarks.turns import __main__ as turns

REPOSITORY = Path(__file__).resolve().parent.parent


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction | argparse._VersionAction)
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [(w, True) for w in ("1", "true", "True", "YES", "on", " On ")]
    + [(w, False) for w in ("0", "false", "FALSE", "no", "No", "off")],
)
def test_parse_bool_reads_the_usual_words(text: str, value: bool) -> None:
    assert parse_bool(text, "VOICE_AGENT_X") is value


@pytest.mark.parametrize("text", ["", "maybe", "2", "enabled", "nope"])
def test_parse_bool_refuses_anything_else_naming_the_variable(text: str) -> None:
    with pytest.raises(ValueError, match=r"VOICE_AGENT_OFFLINE=.* is not a boolean"):
        parse_bool(text, "VOICE_AGENT_OFFLINE")


def test_every_option_of_every_command_names_its_variable() -> None:
    seen = 0
    for path, parser in commands(build_parser()):
        for action in options(parser):
            variable = variable_for(max(action.option_strings, key=len))
            assert f"[env {variable}]" in (action.help or ""), (path, action.option_strings)
            seen += 1
    assert seen > 60  # serve, models pull/list/synth, bench and the global --log-level


@pytest.mark.parametrize("tool", [load, loopback, soak, tts, turns])
def test_the_benchmark_tools_read_the_environment_too(
    tool: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsers: list[argparse.ArgumentParser] = []

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        tool.main()  # type: ignore[attr-defined]
    (parser,) = parsers
    for action in options(parser):
        assert "[env VOICE_AGENT_" in (action.help or ""), action.option_strings


def test_a_variable_sets_the_default_and_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_PORT", "9000")
    monkeypatch.setenv("VOICE_AGENT_OFFLINE", "yes")
    monkeypatch.setenv("VOICE_AGENT_LOG_LEVEL", "debug")
    monkeypatch.setenv("VOICE_AGENT_STT", "/models/whisper")
    args = build_parser().parse_args(["serve"])
    assert (args.port, args.offline, args.log_level) == (9000, True, "DEBUG")
    assert args.stt == Path("/models/whisper")
    args = build_parser().parse_args(["serve", "--port", "1234"])
    assert args.port == 1234


@pytest.mark.parametrize(("text", "offline"), [("no", False), ("off", False), ("1", True)])
def test_offline_no_means_online(monkeypatch: pytest.MonkeyPatch, text: str, offline: bool) -> None:
    monkeypatch.setenv("VOICE_AGENT_OFFLINE", text)
    config = config_from_args(build_parser().parse_args(["serve"]))
    assert config.models.offline is offline


def test_the_first_chunk_cap_reaches_the_conversation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_FIRST_CHUNK_WORDS", "5")
    assert (
        config_from_args(build_parser().parse_args(["serve"])).conversation.first_chunk_words == 5
    )
    with pytest.raises(ValueError, match="--first-chunk-words must be >= 3"):
        config_from_args(build_parser().parse_args(["serve", "--first-chunk-words", "2"]))


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_PORT", "")
    monkeypatch.setenv("VOICE_AGENT_TOKEN", "")
    args = build_parser().parse_args(["serve"])
    assert args.port == 8080 and args.token is None


def test_bench_and_models_read_their_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_AGENT_TOKEN", "0123456789abcdef")
    monkeypatch.setenv("VOICE_AGENT_SESSIONS", "1,2")
    monkeypatch.setenv("VOICE_AGENT_LAUNCH", "on")
    monkeypatch.setenv("VOICE_AGENT_QUIET", "true")
    monkeypatch.setenv("VOICE_AGENT_PROFILE", "gpu")
    bench = build_parser().parse_args(["bench"])
    assert (bench.token, bench.sessions, bench.launch) == ("0123456789abcdef", [1, 2], True)
    assert bench.profile == "gpu"
    pull = build_parser().parse_args(["models", "pull"])
    assert (pull.quiet, pull.profile) == (True, "gpu")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("VOICE_AGENT_PORT", "eighty", r"VOICE_AGENT_PORT='eighty'"),
        ("VOICE_AGENT_OFFLINE", "maybe", r"VOICE_AGENT_OFFLINE='maybe' is not a boolean"),
        ("VOICE_AGENT_PROFILE", "huge", r"VOICE_AGENT_PROFILE='huge' is not one of tiny"),
        ("VOICE_AGENT_LOG_LEVEL", "loud", r"VOICE_AGENT_LOG_LEVEL='loud' is not one of"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_a_bad_value_only_stops_the_commands_that_have_the_option() -> None:
    """VOICE_AGENT_PORT belongs to serve: `models list` runs all the same."""
    result = subprocess.run(
        [sys.executable, "-m", "agent", "models", "list", "--models", "/nonexistent"],
        cwd=REPOSITORY,
        env={"VOICE_AGENT_PORT": "eighty", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "models directory: /nonexistent" in result.stdout


def test_apply_environment_twice_tags_once() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--x-y", type=int, default=1, help="x")
    apply_environment(parser, {"VOICE_AGENT_X_Y": "5"})
    apply_environment(parser, {"VOICE_AGENT_X_Y": "5"})
    (action,) = options(parser)
    assert action.help == "x [env VOICE_AGENT_X_Y]"
    assert parser.parse_args([]).x_y == 5
