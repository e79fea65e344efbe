"""The one reader of `VOICE_AGENT_*` environment variables.

Every option of every command defaults to its variable: `--max-sessions` to
`VOICE_AGENT_MAX_SESSIONS`, `--no-auth` to `VOICE_AGENT_NO_AUTH`. `apply_environment` walks a
finished parser and all its subcommands (serve, models pull/list/synth, bench, and the
`python -m benchmarks.*` tools), so no option can be left without one and no other module
reads the environment for settings. An option of the same name has the same variable in
every command that has it (`--models`, `--token`, `--profile`).

A value from the environment is parsed exactly as the same value on the command line would
be (the option's type and choices), when the command that has the option runs, and a bad
one is an error naming the variable. An option given on the command line wins. An empty
variable counts as unset. On/off options read booleans with `parse_bool`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from typing import Any

PREFIX = "VOICE_AGENT_"

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def variable_for(option: str) -> str:
    """`--max-sessions` -> `VOICE_AGENT_MAX_SESSIONS`."""
    return PREFIX + option.lstrip("-").upper().replace("-", "_")


def parse_bool(text: str, variable: str) -> bool:
    """1/0, true/false, yes/no, on/off in any case; anything else is a ValueError naming
    `variable`."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{variable}={text!r} is not a boolean: use 1/0, true/false, yes/no or on/off")


class EnvValue(str):
    """A default that came from a variable: a string, as argparse wants one, that knows
    which variable it came from so that an error can name it."""

    variable: str

    def __new__(cls, text: str, variable: str) -> EnvValue:
        value = super().__new__(cls, text)
        value.variable = variable
        return value


def _converter(action: argparse.Action) -> Callable[[str], Any]:
    """The action's own type, which for a value from the environment also checks the
    choices (argparse checks them on command-line values only) and names the variable."""
    inner: Callable[[str], Any] = action.type if callable(action.type) else str
    flag = isinstance(action, argparse._StoreConstAction)  # store_true / store_false
    choices = action.choices

    def convert(text: str) -> Any:
        if not isinstance(text, EnvValue):
            return inner(text)
        if flag:
            try:
                on = parse_bool(text, text.variable)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
            return action.const if on else not action.const
        try:
            value = inner(str(text))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"{text.variable}={str(text)!r}: {exc}") from None
        if choices is not None and value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise argparse.ArgumentTypeError(
                f"{text.variable}={str(text)!r} is not one of {allowed}"
            )
        return value

    convert.__name__ = getattr(inner, "__name__", "value")
    return convert


def _takes_variable(action: argparse.Action) -> bool:
    """Options that hold a value: not --help, --version or a subcommand."""
    return bool(action.option_strings) and isinstance(
        action, argparse._StoreAction | argparse._StoreConstAction
    )


def apply_environment(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Give every option of `parser` and of its subcommands its variable: the variable's
    name in its help, and the variable's value (when set) as its default."""
    environ = os.environ if environ is None else environ
    # argparse has no public way to list a parser's actions.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in dict.fromkeys(action.choices.values()):
                apply_environment(subparser, environ)
            continue
        if not _takes_variable(action):
            continue
        variable = variable_for(max(action.option_strings, key=len))
        tag = f"[env {variable}]"
        if action.help is not argparse.SUPPRESS and tag not in (action.help or ""):
            action.help = f"{action.help} {tag}" if action.help else tag
        text = environ.get(variable, "")
        if not text:
            continue
        action.default = EnvValue(text, variable)
        action.type = _converter(action)
        action.required = False


__all__ = ["PREFIX", "EnvValue", "apply_environment", "parse_bool", "variable_for"]
