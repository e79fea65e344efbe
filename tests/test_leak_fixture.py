"""The autouse `no_leaks` fixture really fails tests that leak tasks or peer connections."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

LEAKY_TESTS = """
import asyncio
from aiortc import RTCPeerConnection


async def test_leaks_a_task():
    asyncio.get_running_loop().create_task(asyncio.sleep(30), name="forgotten")


async def test_leaves_a_peer_connection_open():
    pc = RTCPeerConnection()
    pc.createDataChannel("x")
    await pc.setLocalDescription(await pc.createOffer())
    test_leaves_a_peer_connection_open.pc = pc


async def test_clean():
    await asyncio.sleep(0)
"""


def test_no_leaks_fixture_fails_leaky_tests(pytester: pytest.Pytester) -> None:
    conftest = Path(__file__).with_name("conftest.py").read_text()
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(["*leaked tasks*forgotten*", "*peer connection(s) left open*"])
