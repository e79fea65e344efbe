"""`python -m signaling.cluster`: several `voice-agent serve` replicas behind HAProxy, and one
shared inference server (llama-cpp-python's `llama_cpp.server`) for their language model,
as real processes on this machine; the same layout as signaling/deploy/compose.yaml.

    python -m signaling.cluster --replicas 2 -- --models DIR --profile cpu --offline

Arguments after `--` go to every replica's `voice-agent serve`. The launcher picks each
replica's port, `--replica-id` (r1, r2, ...) and `--llm-url`, trusts HAProxy's
X-Forwarded-For (`--trusted-proxies 127.0.0.1`), and gives every replica the same token
(VOICE_AGENT_TOKEN, or a new one it prints in the URL). It waits until the inference
server lists its model, every replica answers /health and HAProxy routes, prints the URL
and runs until SIGINT or SIGTERM, then stops HAProxy, drains the replicas and stops the
inference server. A child that dies meanwhile stops the rest (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from agent.config.env import apply_environment
from signaling.haproxy import Replica, render

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0
LLM_READY_TIMEOUT_S = 300.0
REPLICA_READY_TIMEOUT_S = 600.0
"""A replica's first start may fetch its models."""


class ClusterError(RuntimeError):
    """A child did not start or died; the message names it and its log."""


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    stop_signal: signal.Signals = signal.SIGTERM
    """What asks it to stop cleanly: a replica drains on SIGTERM, HAProxy stops listening
    and finishes its requests on SIGUSR1, uvicorn shuts down on SIGINT."""

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def stop(self) -> int:
        if self.running:
            self.process.send_signal(self.stop_signal)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                return await self.process.wait()
        except TimeoutError:
            log.warning("%s did not stop in %g s: killed", self.name, STOP_TIMEOUT_S)
            self.process.kill()
            return await self.process.wait()


async def spawn(
    name: str,
    command: Sequence[str],
    log_dir: Path,
    env: dict[str, str],
    stop_signal: signal.Signals = signal.SIGTERM,
) -> Child:
    log_path = log_dir / f"{name}.log"
    log.info("starting %s: %s (log: %s)", name, shlex.join(command), log_path)
    with log_path.open("wb") as out:
        # A session of its own: a terminal's Ctrl-C reaches the launcher alone, which stops
        # the children in order (a replica given two signals would skip its drain).
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=os.environ | env,
            start_new_session=True,
        )
    return Child(name, process, log_path, stop_signal)


async def wait_until_answering(
    child: Child, url: str, timeout_s: float, *, want_ok: bool = True
) -> None:
    """Until GET `url` answers (200, or anything when not `want_ok`); ClusterError if the
    child exits first or the time runs out."""
    async with aiohttp.ClientSession() as http:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if not child.running:
                raise ClusterError(
                    f"{child.name} exited ({child.process.returncode}); see {child.log_path}"
                )
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200 or not want_ok:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.25)
    raise ClusterError(
        f"{child.name} did not answer {url} in {timeout_s:g} s; see {child.log_path}"
    )


def haproxy_binary() -> str:
    found = shutil.which("haproxy")
    if found is None:
        raise ClusterError("haproxy is not installed (Debian: apt-get install haproxy)")
    return found


async def start_haproxy(config: str, log_dir: Path, entry_url: str) -> Child:
    """HAProxy in the foreground on `config`, once its entry answers HTTP."""
    path = log_dir / "haproxy.cfg"
    path.write_text(config)
    command = [haproxy_binary(), "-db", "-f", str(path)]
    child = await spawn("haproxy", command, log_dir, {}, signal.SIGUSR1)
    await wait_until_answering(child, f"{entry_url}/health", 30, want_ok=False)
    return child


@dataclass
class ClusterSettings:
    replicas: int = 2
    host: str = "127.0.0.1"
    port: int = 8080
    first_replica_port: int = 8081
    stats_port: int = 8404
    llm: str = "shared"
    """`shared`: one inference server for every replica; `in-process`: each its own."""
    llm_url: str | None = None
    """An inference server already running: used instead of starting one."""
    llm_port: int = 8000
    llm_gguf: Path | None = None
    llm_context: int = 4096
    llm_server_command: str = f"{shlex.quote(sys.executable)} -m llama_cpp.server"
    log_dir: Path | None = None
    serve_args: tuple[str, ...] = ()
    token: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)

    @property
    def entry_url(self) -> str:
        host = "localhost" if self.host in ("127.0.0.1", "::1", "localhost") else self.host
        return f"http://{host}:{self.port}"

    @property
    def shared_llm_url(self) -> str | None:
        if self.llm != "shared":
            return None
        return self.llm_url or f"http://127.0.0.1:{self.llm_port}/v1"

    def replica_list(self) -> list[Replica]:
        return [
            Replica(f"r{n + 1}", f"127.0.0.1:{self.first_replica_port + n}")
            for n in range(self.replicas)
        ]


def resolve_gguf(settings: ClusterSettings) -> Path:
    """The shared server's GGUF: --llm-gguf, else the one the replicas' own model settings
    (--models, --profile, ...) name, fetched if they allow it."""
    if settings.llm_gguf is not None:
        return settings.llm_gguf
    from agent.cli import build_parser
    from agent.config import config_from_args
    from agent.models.resolve import resolve_models

    if "--llm" in settings.serve_args:
        raise ClusterError("with a shared LLM server, give its GGUF as --llm-gguf, not --llm")
    config = config_from_args(build_parser().parse_args(["serve", *settings.serve_args]))
    llm = resolve_models(config.models, config.conversation.language).llm
    assert llm is not None
    return llm


@contextlib.asynccontextmanager
async def cluster(settings: ClusterSettings) -> AsyncIterator[list[Child]]:
    """Every process started and ready; all stopped on exit, HAProxy first."""
    log_dir = settings.log_dir or Path(tempfile.mkdtemp(prefix="voice-agent-cluster-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    try:
        llm_url = settings.shared_llm_url
        if settings.llm == "shared" and settings.llm_url is None:
            gguf = await asyncio.to_thread(resolve_gguf, settings)
            command = [
                *shlex.split(settings.llm_server_command),
                "--model", str(gguf),
                "--host", "127.0.0.1", "--port", str(settings.llm_port),
                "--n_ctx", str(settings.llm_context),
                # A new request must not cut the one streaming (its default): each is
                # another session's reply.
                "--interrupt_requests", "False",
            ]  # fmt: skip
            env = {"PYTHONUNBUFFERED": "1"}
            llm = await spawn("llm-server", command, log_dir, env, signal.SIGINT)
            children.append(llm)
            await wait_until_answering(llm, f"{llm_url}/models", LLM_READY_TIMEOUT_S)
        replicas = settings.replica_list()
        for replica in replicas:
            port = replica.address.rsplit(":", 1)[1]
            command = [
                sys.executable, "-m", "agent", "serve",
                "--host", "127.0.0.1", "--port", port,
                "--replica-id", replica.id,
                "--trusted-proxies", "127.0.0.1",
                *(["--llm-url", llm_url] if llm_url else []),
                *settings.serve_args,
            ]  # fmt: skip
            env = {"VOICE_AGENT_TOKEN": settings.token}
            children.append(await spawn(f"replica-{replica.id}", command, log_dir, env))
        await asyncio.gather(
            *(
                wait_until_answering(child, f"http://{r.address}/health", REPLICA_READY_TIMEOUT_S)
                for child, r in zip(children[-len(replicas) :], replicas, strict=True)
            )
        )
        config = render(
            replicas,
            entry=f"{settings.host}:{settings.port}",
            stats=f"127.0.0.1:{settings.stats_port}",
        )
        children.append(await start_haproxy(config, log_dir, f"http://127.0.0.1:{settings.port}"))
        await wait_until_answering(children[-1], f"http://127.0.0.1:{settings.port}/health", 30)
        yield children
    finally:
        # HAProxy first (no new visitors), then the replicas drain, then their LLM server.
        for child in reversed(children):
            code = await child.stop()
            log.info("%s exited (%d)", child.name, code)


async def run(settings: ClusterSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with cluster(settings) as children:
            query = f"?token={settings.token}"
            print(f"voice-agent cluster is ready: open {settings.entry_url}/{query}", flush=True)
            print(f"  logs: {children[0].log_path.parent}", flush=True)
            exits = {asyncio.ensure_future(c.process.wait()) for c in children}
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({*exits, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (*exits, stopping):
                    task.cancel()
            gone = [c for c in children if not c.running]
            if gone and not stop.is_set():
                raise ClusterError(
                    "; ".join(f"{c.name} died ({c.process.returncode}), see {c.log_path}"
                              for c in gone)
                )  # fmt: skip
        return 0
    except ClusterError as exc:
        print(f"voice-agent cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def parse_args(argv: Sequence[str] | None = None) -> ClusterSettings:
    parser = argparse.ArgumentParser(
        prog="python -m signaling.cluster",
        description="voice-agent replicas behind HAProxy, with one shared LLM server. "
        "Arguments after -- go to every replica's `voice-agent serve`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = ClusterSettings()
    parser.add_argument("--replicas", type=int, default=d.replicas)
    parser.add_argument("--host", default=d.host, help="address HAProxy's entry binds")
    parser.add_argument("--port", type=int, default=d.port, help="HAProxy's entry port")
    parser.add_argument("--first-replica-port", type=int, default=d.first_replica_port)
    parser.add_argument("--stats-port", type=int, default=d.stats_port, help="HAProxy stats")
    parser.add_argument("--llm", choices=("shared", "in-process"), default=d.llm)
    parser.add_argument("--llm-url", default=None, help="use this running server (shared)")
    parser.add_argument("--llm-port", type=int, default=d.llm_port)
    parser.add_argument("--llm-gguf", type=Path, default=None, help="the shared server's model")
    parser.add_argument("--llm-context", type=int, default=d.llm_context)
    parser.add_argument("--llm-server-command", default=d.llm_server_command)
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument(
        "--token",
        default=None,
        help="the entry's and every replica's access token (default: a new random one); "
        "prefer VOICE_AGENT_TOKEN",
    )
    parser.add_argument("serve_args", nargs="*", help="after --: voice-agent serve flags")
    apply_environment(parser)
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    token = args.token or d.token
    return ClusterSettings(
        replicas=args.replicas,
        host=args.host,
        port=args.port,
        first_replica_port=args.first_replica_port,
        stats_port=args.stats_port,
        llm=args.llm,
        llm_url=args.llm_url,
        llm_port=args.llm_port,
        llm_gguf=args.llm_gguf,
        llm_context=args.llm_context,
        llm_server_command=args.llm_server_command,
        log_dir=args.log_dir,
        serve_args=tuple(args.serve_args),
        token=token,
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
