"""A small real HTTP proxy in front of a real inference server, for fault injection: it
forwards every request and relays streamed responses event by event, and for the requests
of one conversation (its affinity key) it can refuse, delay, stall, cut or corrupt the
stream, or stop listening altogether. It records what it saw: each request's headers and
body, and each client that went away while its stream was still being relayed."""

from __future__ import annotations

import asyncio
import enum
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from agent.stages.llm.remote import AFFINITY_HEADER

EVENT_END = re.compile(rb"\r?\n\r?\n")
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class Fault(enum.Enum):
    REFUSE = "refuse"
    """Answer `status` with `Retry-After: retry_after` instead of forwarding."""
    SLOW_FIRST_TOKEN = "slow"
    """Send the response headers, then nothing for `seconds`, then the stream."""
    STALL = "stall"
    """Relay `after_events` data events, then nothing until the client goes away."""
    CLOSE_EARLY = "close"
    """Relay `after_events` data events, then drop the connection."""
    END_EARLY = "end"
    """Relay `after_events` data events, then end the body cleanly (no [DONE])."""
    CORRUPT = "corrupt"
    """Replace data event number `after_events` (from 0) with `payload`."""
    THROTTLE = "throttle"
    """Relay every data event `seconds` after the previous one: a slow server."""
    LONG_REPLY = "long"
    """Forward the request asking for `tokens` tokens, no fewer (llama_cpp.server's
    `min_tokens`): the server is still generating long after the first token."""


@dataclass
class FaultPlan:
    fault: Fault
    key: str | None = None
    """Only requests with this affinity key; None: any chat request."""
    times: int = 1
    status: int = 503
    retry_after: str | None = "1"
    seconds: float = 0.0
    after_events: int = 0
    payload: bytes = b"data: {this is not json"
    tokens: int = 2000


@dataclass
class Recorded:
    path: str
    headers: CIMultiDict[str]
    """Case-insensitive, as HTTP headers are."""
    body: dict[str, Any] | None
    status: int | None = None
    faulted: Fault | None = None


@dataclass
class LlmProxy:
    upstream: str
    """The server's origin, `http://127.0.0.1:PORT`."""
    plans: list[FaultPlan] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    client_gone: list[Recorded] = field(default_factory=list)
    """Requests whose client went away while their stream was being relayed."""
    port: int = 0
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def chat_requests(self, key: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.path.endswith("/chat/completions")
            and (key is None or r.headers.get(AFFINITY_HEADER) == key)
        ]

    async def start(self) -> None:
        """Listen (again, on the same port after `stop`)."""
        self._http = self._http or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
        )
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening (the server is "down"): later connections are refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def aclose(self) -> None:
        await self.stop()
        if self._http is not None:
            await self._http.close()

    def _take_plan(self, recorded: Recorded) -> FaultPlan | None:
        if not recorded.path.endswith("/chat/completions"):
            return None
        key = recorded.headers.get(AFFINITY_HEADER)
        for plan in self.plans:
            if plan.times > 0 and plan.key in (None, key):
                plan.times -= 1
                return plan
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = Recorded(
            request.path,
            CIMultiDict(request.headers),
            json.loads(body) if body else None,
        )
        self.requests.append(recorded)
        plan = self._take_plan(recorded)
        recorded.faulted = plan.fault if plan else None
        if plan is not None and plan.fault is Fault.REFUSE:
            recorded.status = plan.status
            headers = {"Retry-After": plan.retry_after} if plan.retry_after else {}
            return web.json_response(
                {"error": {"message": "injected refusal", "type": "server_busy"}},
                status=plan.status,
                headers=headers,
            )
        assert self._http is not None
        if plan is not None and plan.fault is Fault.LONG_REPLY and recorded.body is not None:
            body = json.dumps(
                recorded.body | {"max_tokens": plan.tokens, "min_tokens": plan.tokens}
            ).encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            recorded.status = upstream.status
            content_type = upstream.headers.get("Content-Type", "application/json")
            if "text/event-stream" not in content_type:
                return web.Response(
                    body=await upstream.read(), status=upstream.status, content_type=None,
                    headers={"Content-Type": content_type},
                )  # fmt: skip
            response = web.StreamResponse(
                status=upstream.status, headers={"Content-Type": content_type}
            )
            await response.prepare(request)
            try:
                await self._relay(request, upstream, response, plan)
            except ConnectionResetError:
                self.client_gone.append(recorded)
            return response

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        plan: FaultPlan | None,
    ) -> None:
        fault = plan.fault if plan else None
        if plan is not None and fault is Fault.SLOW_FIRST_TOKEN:
            await self._wait_unless_gone(request, plan.seconds)
        data_events = 0
        async for event in _events(upstream):
            if plan is not None and event.startswith(b"data:"):
                if fault is Fault.THROTTLE:
                    await self._wait_unless_gone(request, plan.seconds)
                if data_events == plan.after_events:
                    if fault is Fault.STALL:
                        await self._wait_unless_gone(request, None)
                    elif fault is Fault.CLOSE_EARLY:
                        assert request.transport is not None
                        request.transport.close()  # mid-body: no last chunk, no [DONE]
                        return
                    elif fault is Fault.END_EARLY:
                        break
                    elif fault is Fault.CORRUPT:
                        event = plan.payload
                data_events += 1
            await response.write(event + b"\n\n")
        await response.write_eof()

    async def _wait_unless_gone(self, request: web.Request, seconds: float | None) -> None:
        """Sleep `seconds` (None: for ever); a client that goes away meanwhile ends it with
        ConnectionResetError, as a write to it would."""
        loop = asyncio.get_running_loop()
        until = None if seconds is None else loop.time() + seconds
        while until is None or loop.time() < until:
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("the client went away")
            await asyncio.sleep(0.05)


async def _events(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The server-sent events of a response body, each without its blank-line end."""
    pending = b""
    async for piece in upstream.content.iter_any():
        pending += piece
        while (end := EVENT_END.search(pending)) is not None:
            yield pending[: end.start()]
            pending = pending[end.end() :]
