"""ICE: excluded interfaces and link-local addresses never reach an answer nor the checks;
STUN/TURN settings are parsed and reach aiortc and the page."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import aiohttp
import aioice.ice
import ifaddr
import pytest
from aiortc.rtcicetransport import connection_kwargs

from agent.config import AppConfig, IceServer, ServerConfig, parse_ice_servers
from agent.transport import aiortc_internals
from benchmarks.peer import AgentClient
from signaling.ice import HostAddressFilter, browser_ice_servers
from signaling.offer import peer_configuration
from tests.conftest import ServerFactory
from tests.test_transport import RecordingPipeline

pytestmark = pytest.mark.timeout(60)


def adapter(name: str, *ips: str | tuple[str, int, int]) -> ifaddr.Adapter:
    return ifaddr.Adapter(name, name, [ifaddr.IP(ip, 8, name) for ip in ips])


def candidate_hosts(sdp: str) -> set[str]:
    return set(re.findall(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ", sdp, re.MULTILINE))


# -- the address filter, on a fake machine --------------------------------------------

MACHINE = [
    adapter("lo", "127.0.0.1", ("::1", 0, 0)),
    adapter("eth0", "192.168.1.10", "169.254.7.7", ("2001:db8::10", 0, 0), ("fe80::1", 0, 2)),
    adapter("docker0", "172.17.0.1"),
    adapter("br-5f2a", "172.18.0.1"),
    adapter("veth42ab", ("fe80::42", 0, 9)),
    adapter("virbr0", "192.168.122.1"),
    adapter("cni0", "10.22.0.1"),
    adapter("flannel.1", "10.244.0.0"),
    adapter("cali1234", "10.0.0.9"),
    adapter("lxcbr0", "10.0.3.1"),
    adapter("podman1", "10.88.0.1"),
    adapter("wlan0", "10.1.2.3"),
]
GATHERED = [
    "192.168.1.10",
    "169.254.7.7",
    "2001:db8::10",
    "fe80::1",
    "172.17.0.1",
    "172.18.0.1",
    "192.168.122.1",
    "10.22.0.1",
    "10.244.0.0",
    "10.0.0.9",
    "10.0.3.1",
    "10.88.0.1",
    "10.1.2.3",
]


def test_default_filter_drops_container_bridges_and_link_local() -> None:
    kept = HostAddressFilter.from_config(ServerConfig()).keep(GATHERED, MACHINE)
    assert kept == ["192.168.1.10", "2001:db8::10", "10.1.2.3"]


def test_link_local_can_be_allowed_and_patterns_replaced() -> None:
    only_wlan = HostAddressFilter(("wlan*",), allow_link_local=True)
    assert only_wlan.keep(GATHERED, MACHINE) == [a for a in GATHERED if a != "10.1.2.3"]
    nothing = HostAddressFilter((), allow_link_local=True)
    assert not nothing.active
    assert nothing.keep(GATHERED, MACHINE) == GATHERED


# -- a real answer from a real server, on fake interfaces -------------------------------

# Every 127/8 address can be bound on Linux, so these fake interfaces really carry traffic.
# aioice itself skips 127.0.0.1.
FAKE_MACHINE = [
    adapter("lo", "127.0.0.1"),
    adapter("eth0", "127.0.0.2"),
    adapter("docker0", "127.0.0.3"),
    adapter("veth7", "127.0.0.4"),
]


async def _connect_and_inspect(
    start_server: ServerFactory, **server_fields: Any
) -> tuple[set[str], set[str], set[str]]:
    """(hosts in the client's offer, hosts in the server's answer, addresses the server's
    ICE agent holds sockets on)."""
    pipeline = RecordingPipeline()
    server = await start_server(pipeline=pipeline, **server_fields)
    client = AgentClient(server.url)
    try:
        answer = await client.connect()
        await client.wait_channel_open()
        session = pipeline.sessions[answer["session_id"]]
        sockets: set[str] = set()
        for transceiver in session.pc.getTransceivers():
            gatherer = transceiver.receiver.transport.transport.iceGatherer
            connection = aiortc_internals.ice_connection(gatherer)
            # aioice keeps one STUN protocol per bound socket: what the agent really listens on.
            sockets |= {p.local_candidate.host for p in connection._protocols}
        return (
            candidate_hosts(client.pc.localDescription.sdp),
            candidate_hosts(answer["sdp"]),
            sockets,
        )
    finally:
        await client.close()


async def test_answer_has_no_candidates_from_excluded_interfaces(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ifaddr, "get_adapters", lambda *a, **k: FAKE_MACHINE)
    original_get_host_addresses = aioice.ice.get_host_addresses

    offered, answered, sockets = await _connect_and_inspect(start_server)

    # The connection worked on the one allowed interface; the bridges were never bound,
    # so they can take part in no connectivity check either.
    assert answered == {"127.0.0.2"}
    assert sockets == {"127.0.0.2"}
    # Nothing process-wide changed: the client in this same process still offers them all.
    assert offered == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    assert aioice.ice.get_host_addresses is original_get_host_addresses


async def test_without_exclusions_every_interface_is_offered(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the fake interfaces are what aioice gathers on."""
    monkeypatch.setattr(ifaddr, "get_adapters", lambda *a, **k: FAKE_MACHINE)
    _, answered, sockets = await _connect_and_inspect(
        start_server, ice_exclude_interfaces=(), ice_allow_link_local=True
    )
    assert answered == sockets == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}


# -- STUN and TURN ----------------------------------------------------------------------


def test_ice_server_urls_with_credentials_parse() -> None:
    servers = parse_ice_servers(
        "stun:stun.example.org:3478, turn:alice:s%40cr%3At@turn.example.org:3478"
        ",turns:bob:pw@turn.example.org:5349?transport=tcp"
    )
    assert servers == (
        IceServer(("stun:stun.example.org:3478",)),
        IceServer(("turn:turn.example.org:3478",), "alice", "s@cr:t"),
        IceServer(("turns:turn.example.org:5349?transport=tcp",), "bob", "pw"),
    )


def test_ice_servers_parse_from_json() -> None:
    text = json.dumps(
        [
            {"urls": "stun:stun.example.org"},
            {
                "urls": ["turn:turn.example.org:3478?transport=udp"],
                "username": "alice",
                "credential": "secret",
            },
        ]
    )
    assert parse_ice_servers(text) == (
        IceServer(("stun:stun.example.org",)),
        IceServer(("turn:turn.example.org:3478?transport=udp",), "alice", "secret"),
    )


@pytest.mark.parametrize(
    "text",
    [
        "http://turn.example.org",
        "turn:",
        "[{bad json",
        '[{"username": "x"}]',
        '[{"urls": "turn:t.example.org", "username": 5, "credential": "x"}]',
    ],
)
def test_bad_ice_servers_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--ice-servers"):
        parse_ice_servers(text)


def test_ice_servers_reach_aiortc() -> None:
    config = replace(
        ServerConfig(),
        ice_servers=parse_ice_servers(
            "stun:stun.example.org:3478,turn:alice:secret@turn.example.org:3479?transport=tcp"
        ),
    )
    rtc = peer_configuration(config)
    # What aiortc's ICE gatherer will be built with, computed by aiortc itself.
    kwargs = connection_kwargs(rtc.iceServers)
    assert kwargs["stun_server"] == ("stun.example.org", 3478)
    assert kwargs["turn_server"] == ("turn.example.org", 3479)
    assert kwargs["turn_transport"] == "tcp"
    assert (kwargs["turn_username"], kwargs["turn_password"]) == ("alice", "secret")
    # No servers configured: an explicit empty list, never aiortc's public default.
    assert peer_configuration(ServerConfig()).iceServers == []


async def test_page_gets_the_ice_servers(start_server: ServerFactory) -> None:
    servers = parse_ice_servers("stun:stun.example.org:3478,turn:alice:secret@turn.example.org")
    config = replace(AppConfig(), server=replace(ServerConfig(), ice_servers=servers))
    server = await start_server(config)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/config") as response:
            assert response.status == 200
            body = await response.json()
    assert body == {
        "iceServers": [
            {"urls": ["stun:stun.example.org:3478"]},  # no "username": null for the browser
            {"urls": ["turn:turn.example.org"], "username": "alice", "credential": "secret"},
        ]
    }
    assert browser_ice_servers(()) == []
