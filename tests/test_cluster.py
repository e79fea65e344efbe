"""Replicas behind a real HAProxy, started by the test with the configuration of
signaling/haproxy.py: an offer refused by a full replica (503) lands on the other, the full
replica's health check takes it out of rotation, a session's DELETE still reaches the
replica that owns it, and media flows between each client and its replica directly. The
committed deployment files agree with the renderer and HAProxy accepts them, and
`python -m signaling.cluster` starts replicas, an inference server and HAProxy as README
says, and stops them cleanly."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from agent.cli import build_parser
from agent.config import ServerConfig, config_from_args
from benchmarks.peer import AgentClient
from signaling.cluster import haproxy_binary, start_haproxy
from signaling.haproxy import Replica, default_replicas, render
from signaling.offer import new_session_id
from tests.conftest import RunningServer, ServerFactory
from tests.llm_server import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "signaling" / "deploy"
ONE_ADDRESS = {"max_sessions_per_ip": 0, "offer_rate_per_min": 0.0}
"""Every client of these tests comes from 127.0.0.1 (through HAProxy)."""


def address(server: RunningServer) -> str:
    return server.url.removeprefix("http://")


async def replica_stats(stats_url: str) -> dict[str, dict[str, str]]:
    """HAProxy's CSV statistics of the `replicas` backend, by server name."""
    async with aiohttp.ClientSession() as http, http.get(f"{stats_url}/;csv") as response:
        text = await response.text()
    rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
    return {row["svname"]: row for row in rows if row["pxname"] == "replicas"}


async def wait_for_states(stats_url: str, wanted: dict[str, str], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while True:
            rows = await replica_stats(stats_url)
            if all(rows[name]["status"] == state for name, state in wanted.items()):
                return
            await asyncio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_a_full_replica_passes_offers_on_and_keeps_its_sessions(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    trusted = ("127.0.0.1/32",)
    r1 = await start_server(max_sessions=1, replica_id="r1", trusted_proxies=trusted, **ONE_ADDRESS)
    r2 = await start_server(max_sessions=3, replica_id="r2", trusted_proxies=trusted, **ONE_ADDRESS)
    entry_port, stats_port = free_port(), free_port()
    entry, stats = f"http://127.0.0.1:{entry_port}", f"http://127.0.0.1:{stats_port}"
    # Three failed checks a second apart before a full replica leaves the rotation: the
    # offers below reach it first, and are refused with 503.
    config = render(
        [Replica("r1", address(r1)), Replica("r2", address(r2))],
        entry=f"127.0.0.1:{entry_port}",
        stats=f"127.0.0.1:{stats_port}",
        check_interval="1s",
        fall=3,
        rise=1,
    )
    haproxy = await start_haproxy(config, tmp_path, entry)
    clients: list[AgentClient] = []
    try:
        await wait_for_states(stats, {"r1": "UP", "r2": "UP"})
        owner = AgentClient(r1.url)  # straight to r1, which is now full
        clients.append(owner)
        await owner.connect()
        assert owner.session_id is not None and owner.session_id.startswith("r1-")
        for _ in range(2):  # round robin tries r1 for one of them at least
            client = AgentClient(entry)
            clients.append(client)
            await client.connect()
            assert client.session_id is not None and client.session_id.startswith("r2-")
        assert (len(r1.sessions), len(r2.sessions)) == (1, 2)
        rows = await replica_stats(stats)
        # r1 refused an offer (503) and HAProxy sent it to another replica.
        assert int(rows["r1"]["wretr"]) >= 1 and int(rows["r1"]["wredis"]) >= 1, rows["r1"]
        for client in clients:  # the data channel runs straight to each replica
            await client.wait_channel_open()

        # r1's /health answers 503 "full": its check takes it out of rotation...
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{r1.url}/health") as response:
                assert response.status == 503
                assert (await response.json())["status"] == "full"
            await wait_for_states(stats, {"r1": "DOWN", "r2": "UP"})
            # ...and its session's DELETE through the balancer still reaches it.
            url = f"{entry}/sessions/{owner.session_id}"
            async with http.delete(url) as response:
                assert response.status == 204
            assert len(r1.sessions) == 0
            await wait_for_states(stats, {"r1": "UP"})
            async with http.delete(f"{entry}/sessions/r2-nosuchsession") as response:
                assert response.status == 404
                assert "r2-nosuchsession" in (await response.json())["error"]
    finally:
        for client in clients:
            await client.close()
        assert await haproxy.stop() == 0


def test_the_committed_haproxy_config_is_the_rendered_one_and_valid() -> None:
    committed = DEPLOY / "haproxy.cfg"
    assert committed.read_text() == render(default_replicas(2)), (
        "regenerate it: python -m signaling.haproxy --replicas 2 > signaling/deploy/haproxy.cfg"
    )
    check = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(committed)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_image_compiles_the_pinned_llama_cpp_portably() -> None:
    """The Dockerfile installs llama-cpp-python before the code (so a code change does not
    recompile it): at the version pyproject.toml pins, for a portable instruction set."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    (pin,) = re.findall(r'"llama-cpp-python==([\d.]+)"', pyproject)
    assert f'"llama-cpp-python[server]=={pin}"' in dockerfile
    (default,) = re.findall(r'^ARG CMAKE_ARGS="([^"]*)"', dockerfile, re.MULTILINE)
    assert "-DGGML_NATIVE=OFF" in default


def test_the_compose_file_matches_the_haproxy_config() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    config = (DEPLOY / "haproxy.cfg").read_text()
    servers = dict(re.findall(r"^\s+server (\S+) 127\.0\.0\.1:(\d+)$", config, re.MULTILINE))
    replicas = {name: s for name, s in services.items() if name.startswith("replica")}
    assert len(replicas) == len(servers) == 2
    for service in replicas.values():
        command = service["command"]
        replica_id = command[command.index("--replica-id") + 1]
        assert command[command.index("--port") + 1] == servers[replica_id]
        assert service["network_mode"] == "host"  # media straight to the replica
    haproxy = services["haproxy"]
    assert any(v.startswith("./haproxy.cfg:") for v in haproxy["volumes"])


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_the_cluster_launcher_starts_everything_and_stops_cleanly(
    tiny_models: Path, tmp_path: Path
) -> None:
    port, first = free_port(), free_port()
    command = [
        sys.executable, "-m", "signaling.cluster",
        "--replicas", "2", "--port", str(port), "--first-replica-port", str(first),
        "--stats-port", str(free_port()), "--llm-port", str(free_port()),
        "--log-dir", str(tmp_path / "logs"),
        "--", "--models", str(tiny_models), "--profile", "tiny", "--offline",
    ]  # fmt: skip
    launcher = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    assert launcher.stdout is not None
    client: AgentClient | None = None
    try:
        async with asyncio.timeout(180):
            while b"is ready" not in (line := await launcher.stdout.readline()):
                assert line, f"the launcher exited ({await launcher.wait()})"
        match = re.search(r"open (http://\S+)/\?token=(\w+)", line.decode())
        assert match is not None, line
        url, token = match.groups()
        async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as response:
            health = await response.json()
        assert health["replica"] in ("r1", "r2")
        assert health["models"]["llm"]["backend"] == "remote"
        client = AgentClient(url, token=token)
        await client.connect()
        assert client.session_id is not None and client.session_id[:3] in ("r1-", "r2-")
        await client.wait_channel_open()
        await client.close()
        client = None
        launcher.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await launcher.wait() == 0
        for name in ("replica-r1", "replica-r2"):
            assert "shutdown complete" in (tmp_path / "logs" / f"{name}.log").read_text()
    finally:
        if client is not None:
            await client.close()
        if launcher.returncode is None:
            launcher.send_signal(signal.SIGTERM)
            await launcher.wait()


def test_replica_ids_prefix_session_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    def server(*argv: str) -> ServerConfig:
        return config_from_args(build_parser().parse_args(["serve", *argv])).server

    assert server().replica_id is None
    assert re.fullmatch(r"[0-9a-f]{32}", new_session_id(None))
    assert re.fullmatch(r"r7-[0-9a-f]{32}", new_session_id(server("--replica-id", "r7").replica_id))
    for bad in ("r-1", "r1/", "x" * 17):
        with pytest.raises(ValueError, match="--replica-id"):
            server("--replica-id", bad)
    monkeypatch.setenv("VOICE_AGENT_REPLICA_ID", "gpu2")
    assert server().replica_id == "gpu2"
