"""agent.app.server: the address it prints, and what a second shutdown signal does."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest

from agent.app.server import FORCED_EXIT_CODE, ShutdownSignals, page_url
from agent.config import AppConfig, ServerConfig


def config(**server: object) -> AppConfig:
    return replace(AppConfig(), server=replace(ServerConfig(), **server))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("server", "url"),
    [
        ({}, "http://localhost:8080/"),
        ({"host": "::1", "port": 9000}, "http://localhost:9000/"),
        (
            {"host": "192.168.1.20", "token": "s3cret/+=x"},
            "http://192.168.1.20:8080/?token=s3cret%2F%2B%3Dx",
        ),
        ({"host": "fd00::5", "token": "abc"}, "http://[fd00::5]:8080/?token=abc"),
    ],
)
def test_the_printed_address_opens_the_page_with_its_token(
    server: dict[str, object], url: str
) -> None:
    assert page_url(config(**server)) == url


async def test_the_first_signal_drains_and_the_second_exits_at_once() -> None:
    exits: list[int] = []
    signals = ShutdownSignals(force_exit=exits.append)
    signals.received(signal.SIGTERM)
    assert signals.stop.is_set() and exits == []
    signals.received(signal.SIGINT)
    assert exits == [FORCED_EXIT_CODE]
