"""POST /offer under fuzzing: thousands of mutated and junk offers, built from a real Chrome
offer and aiortc's, must each get a fast 400 or 413 (or, for a mutation that left a valid
offer, a real answer whose session then closes), leave no session or peer connection
behind, and a real client must still connect afterwards.

The counts per status and per mutation kind and the answer times are printed (run with -s)
and written to fuzz-offers.json in the test's tmp directory.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection
from aiortc import sdp as aiortc_sdp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import AppConfig
from benchmarks.harness import one_address_config
from benchmarks.peer import AgentClient, MicrophoneTrack
from signaling.offer import OfferError, parse_offer
from tests import offer_mutations as mutations
from tests.conftest import ServerFactory
from tests.test_offer_validation import browser_like_offer
from tests.test_transport import RecordingPipeline

DATA = Path(__file__).resolve().parent / "data"
PER_KIND = 140
"""18 kinds x 140 = 2,520 cases: about 15 s here."""
MAX_ANSWER_S = 1.0

pytestmark = pytest.mark.timeout(180)


async def aiortc_client_offer() -> str:
    """What benchmarks.peer.AgentClient sends: a data channel and a microphone track."""
    pc = RTCPeerConnection()
    pc.createDataChannel("events")
    track = MicrophoneTrack()
    pc.addTrack(track)
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    track.stop()
    await pc.close()
    return sdp


async def seed_offers() -> list[str]:
    chrome = (DATA / "chrome-offer.sdp").read_text().replace("\r\n", "\n").replace("\n", "\r\n")
    seeds = [chrome, await browser_like_offer(), await aiortc_client_offer()]
    for sdp in seeds:  # a seed that breaks the contract would make every count meaningless
        assert mutations.keeps_contract(sdp), sdp
    return seeds


@dataclass
class Tally:
    by_outcome: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    times_s: list[float] = field(default_factory=list)
    max_by_kind_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    aiortc_refusals: Counter[str] = field(default_factory=Counter)
    """Why aiortc refused offers that keep the contract (the exception, not its details)."""
    failures: list[str] = field(default_factory=list)

    def add(self, kind: str, outcome: str, elapsed_s: float) -> None:
        self.by_outcome[outcome] += 1
        self.by_kind[kind][outcome] += 1
        self.times_s.append(elapsed_s)
        self.max_by_kind_s[kind] = max(self.max_by_kind_s[kind], elapsed_s)

    def report(self) -> dict[str, Any]:
        ms = sorted(t * 1000 for t in self.times_s)
        return {
            "cases": len(ms),
            "by_outcome": dict(sorted(self.by_outcome.items())),
            "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(self.by_kind.items())},
            "answer_ms": {
                "p50": round(statistics.median(ms), 2),
                "p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
                "max": round(ms[-1], 2),
            },
            "aiortc_refusals": dict(self.aiortc_refusals.most_common()),
            "max_ms_by_kind": {
                k: round(v * 1000, 2) for k, v in sorted(self.max_by_kind_s.items())
            },
        }


async def post(http: aiohttp.ClientSession, url: str, case: mutations.Case) -> tuple[int, Any]:
    async def chunks() -> Any:
        for i in range(0, len(case.body), 8192):
            yield case.body[i : i + 8192]

    data: Any = chunks() if case.chunked else case.body
    async with http.post(
        f"{url}/offer", data=data, headers={"Content-Type": "application/json"}
    ) as response:
        try:
            body = await response.json()
        except (aiohttp.ContentTypeError, ValueError):
            body = None
        return response.status, body


def answer_is_complete(body: Any) -> bool:
    if not isinstance(body, dict) or body.get("type") != "answer" or not body.get("session_id"):
        return False
    answer = aiortc_sdp.SessionDescription.parse(body["sdp"])
    return [m.kind for m in answer.media].count("audio") == 1


async def judge(http: aiohttp.ClientSession, url: str, case: mutations.Case, tally: Tally) -> None:
    expected = mutations.expected_statuses(case)
    started = time.perf_counter()
    status, body = await post(http, url, case)
    elapsed = time.perf_counter() - started
    error = body.get("error") if isinstance(body, dict) else None
    where = f"{case.kind} #{len(tally.times_s)}: {status} {str(error or body)[:120]!r}"
    if status not in expected:
        tally.failures.append(f"{where}: expected {sorted(expected)}")
    if status in (400, 413) and not isinstance(error, str):
        tally.failures.append(f"{where}: an error answer without a JSON 'error'")
    if elapsed > MAX_ANSWER_S:
        tally.failures.append(f"{where}: answered in {elapsed:.3f} s")
    if status == 200:
        outcome = "200 valid, closed"  # a still-valid offer: answered, then DELETEd
        if not answer_is_complete(body):
            tally.failures.append(f"{where}: 200 without a complete answer")
        else:
            async with http.delete(f"{url}/sessions/{body['session_id']}") as response:
                if response.status != 204:
                    tally.failures.append(f"{where}: DELETE answered {response.status}")
    elif status == 400 and 200 in expected:
        outcome = "400 valid, aiortc"  # keeps the contract, but aiortc refused it
        tally.aiortc_refusals[":".join(str(error).split(":")[:2])] += 1
    else:
        outcome = str(status)
    tally.add(case.kind, outcome, elapsed)


def open_peer_connections() -> list[RTCPeerConnection]:
    gc.collect()
    return [
        o
        for o in gc.get_objects()
        if type(o) is RTCPeerConnection and o.connectionState != "closed"
    ]


def print_report(report: dict[str, Any], path: Path) -> None:
    outcomes = sorted(report["by_outcome"])
    print(f"\nfuzzed POST /offer: {report['cases']} cases, answer time {report['answer_ms']} ms")
    print(f"{'kind':<16}" + "".join(f"{o:>20}" for o in outcomes) + f"{'max ms':>10}")
    for kind, counts in report["by_kind"].items():
        cells = "".join(f"{counts.get(o, 0):>20}" for o in outcomes)
        print(f"{kind:<16}{cells}{report['max_ms_by_kind'][kind]:>10}")
    print(f"{'total':<16}" + "".join(f"{report['by_outcome'][o]:>20}" for o in outcomes))
    print(f"aiortc's refusals of offers that keep the contract: {report['aiortc_refusals']}")
    print(f"written to {path}")


async def test_fuzzed_offers_get_fast_clear_refusals_and_leave_nothing_behind(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = await start_server(one_address_config(AppConfig()), RecordingPipeline())
    cases = mutations.generate(await seed_offers(), PER_KIND, seed=0)
    for case in cases:  # the mutations that never leave a valid offer really never do
        if case.kind in mutations.ALWAYS_INVALID:
            assert 200 not in mutations.expected_statuses(case), case.kind
    tally = Tally()
    async with aiohttp.ClientSession() as http:
        for case in cases:
            await judge(http, server.url, case, tally)

    report = tally.report()
    path = tmp_path / "fuzz-offers.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report, path)
    assert not tally.failures, f"{len(tally.failures)} failures:\n" + "\n".join(tally.failures[:20])
    assert report["cases"] >= 2000
    assert set(report["by_kind"]) == {m.__name__ for m in mutations.MUTATIONS} | {"splice"}
    assert report["by_outcome"]["400"] > report["cases"] // 2
    assert report["by_outcome"]["413"] >= PER_KIND
    assert len(server.sessions) == 0
    assert not open_peer_connections()

    client = AgentClient(server.url)
    try:
        answer = await client.connect()
        await client.wait_channel_open()
        client.send({"type": "ping", "t": 1})
        await client.wait_for_event("pong", timeout=5, since=0)
        assert answer["type"] == "answer" and len(server.sessions) == 1
    finally:
        await client.close()


def test_deeply_nested_json_is_a_400_not_a_crash() -> None:
    """json.loads raises RecursionError (not ValueError) on deep nesting."""
    with pytest.raises(OfferError) as raised:
        parse_offer(b"[" * 50_000 + b"]" * 50_000)
    assert raised.value.status == 400


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(["sdp", "type", "x"]) | st.text(max_size=5), children)
    ),
    max_leaves=20,
)
OFFERISH = st.fixed_dictionaries(
    {
        "sdp": st.text(max_size=300).map(lambda s: "v=0\r\n" + s),
        "type": st.sampled_from(["offer", "answer", ""]),
    }
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.binary(max_size=512)
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | OFFERISH.map(lambda v: json.dumps(v).encode())
)
def test_parse_offer_answers_an_offer_or_a_400(body: bytes) -> None:
    """Whatever the body, parsing ends in an Offer or an OfferError(400), never anything else."""
    try:
        offer = parse_offer(body)
    except OfferError as exc:
        assert exc.status == 400
        return
    assert mutations.keeps_contract(offer.sdp)
