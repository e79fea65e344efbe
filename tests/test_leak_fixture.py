"""The autouse `no_leaks` fixture really fails tests that leak tasks or peer connections."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child pytest imports this checkout's packages, as the conftest it copies does."""
    monkeypatch.setenv("PYTHONPATH", str(REPOSITORY))


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


SKIPPING_TESTS = """
import pytest

missing = pytest.importorskip("a_module_that_is_not_installed")


def test_never_collected():
    pass
"""

SKIPPING_TEST = """
import pytest


def test_skips():
    pytest.skip("espeak-ng is not installed")


def test_runs():
    pass
"""


@pytest.mark.parametrize("ci", ["true", "false"])
def test_a_skip_fails_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    """With CI=true (as CI and tests/run-all.sh set it) a skipped test or module fails."""
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(test_skip_module=SKIPPING_TESTS, test_skip_one=SKIPPING_TEST)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    monkeypatch.setenv("CI", ci)
    one = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_skip_one.py")
    module = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_skip_module.py")
    if ci == "true":
        one.assert_outcomes(passed=1, failed=1)
        module.assert_outcomes(errors=1)
        for result in (one, module):
            result.stdout.fnmatch_lines(["*skipped in CI, where every test must run*"])
    else:
        one.assert_outcomes(passed=1, skipped=1)
        module.assert_outcomes(skipped=1)
