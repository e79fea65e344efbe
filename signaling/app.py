"""The aiohttp application: page, offers, sessions, health. No module-level state: all of
it lives on the app under typed keys and is torn down by the cleanup context."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from aiohttp import web

from agent.app.pipeline import Pipeline
from agent.config import AppConfig
from signaling.access import ACCESS_KEY, AccessPolicy, access_middleware
from signaling.ice import browser_ice_servers
from signaling.limits import RateLimiter
from signaling.loop_monitor import watch_event_loop
from signaling.offer import OfferError, answer_offer, read_offer
from signaling.sessions import SessionRegistry

log = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("config", AppConfig)
SESSIONS_KEY = web.AppKey("sessions", SessionRegistry)
PIPELINE_KEY = web.AppKey("pipeline", Pipeline)
WEB_DIR_KEY = web.AppKey("web_dir", Path)
OFFER_LIMITER_KEY = web.AppKey("offer_limiter", RateLimiter)

RETRY_AFTER_S = 5
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def create_app(config: AppConfig, pipeline: Pipeline | None = None) -> web.Application:
    app = web.Application(
        client_max_size=config.server.max_offer_bytes, middlewares=[access_middleware]
    )
    app[CONFIG_KEY] = config
    app[ACCESS_KEY] = AccessPolicy.from_config(config.server)
    app[OFFER_LIMITER_KEY] = RateLimiter(
        config.server.offer_rate_per_min, config.server.offer_burst
    )
    app[SESSIONS_KEY] = SessionRegistry(
        config.server.max_sessions, config.server.max_sessions_per_ip
    )
    if pipeline is not None:
        app[PIPELINE_KEY] = pipeline
    app[WEB_DIR_KEY] = web_dir()
    app.cleanup_ctx.append(_close_sessions_on_cleanup)
    app.cleanup_ctx.append(
        watch_event_loop(pipeline.metrics.loop_lag_seconds if pipeline else None)
    )
    # Names in signaling.access.PUBLIC_ROUTES need no token; every other route does.
    app.router.add_get("/", index, name="page")
    app.router.add_get("/config", client_config)
    app.router.add_post("/offer", offer)
    app.router.add_delete("/sessions/{session_id}", delete_session)
    app.router.add_get("/health", health, name="health")
    app.router.add_get("/metrics", metrics)
    app.router.add_static("/static/", app[WEB_DIR_KEY], name="static")
    app.on_response_prepare.append(_security_headers)
    return app


def web_dir() -> Path:
    return Path(str(resources.files("web")))


async def _close_sessions_on_cleanup(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[SESSIONS_KEY].close_all("server shutdown")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Permissions-Policy", "microphone=(self)")


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[WEB_DIR_KEY] / "index.html")


async def client_config(request: web.Request) -> web.Response:
    """What the page needs before its offer: the ICE servers (TURN credentials included,
    hence behind the token)."""
    servers = browser_ice_servers(request.app[CONFIG_KEY].server.ice_servers)
    return web.json_response({"iceServers": servers})


async def offer(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    sessions = request.app[SESSIONS_KEY]
    client = request.app[ACCESS_KEY].client_key(request)
    # Before reading the body: a flood of offers, junk or not, costs one dict lookup each.
    wait_s = request.app[OFFER_LIMITER_KEY].acquire(client)
    if wait_s > 0:
        retry_after = str(math.ceil(wait_s))
        return json_error(
            429,
            f"too many offers from {client}; try again in {retry_after} s",
            **{"Retry-After": retry_after},
        )
    try:
        parsed = await read_offer(request, config.server.max_offer_bytes)
    except OfferError as exc:
        return json_error(exc.status, exc.message)
    if sessions.draining:
        return json_error(503, "the server is shutting down", **{"Retry-After": str(RETRY_AFTER_S)})
    refusal = sessions.try_reserve(client)
    if refusal == "server full":
        return json_error(
            503,
            f"the server is full ({sessions.max_sessions} sessions); try again shortly",
            **{"Retry-After": str(RETRY_AFTER_S)},
        )
    if refusal == "client full":
        return json_error(
            429,
            f"{client} already has {sessions.max_per_client} sessions, the most one address "
            "may have; hang up one first",
            **{"Retry-After": str(RETRY_AFTER_S)},
        )
    pipeline = request.app.get(PIPELINE_KEY)
    try:
        session = await answer_offer(
            parsed, config.server, pipeline.attach if pipeline is not None else None
        )
    except OfferError as exc:
        sessions.release_reservation(client)
        return json_error(exc.status, exc.message)
    except BaseException:
        sessions.release_reservation(client)
        raise
    sessions.add(session, client)
    session.start()
    description = session.pc.localDescription
    return web.json_response(
        {"sdp": description.sdp, "type": description.type, "session_id": session.id}
    )


async def delete_session(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    if not await request.app[SESSIONS_KEY].close(session_id, "deleted by client"):
        return json_error(404, f"no session {session_id}")
    return web.Response(status=204)


async def health(request: web.Request) -> web.Response:
    """`ok`; or 503 with `draining` once shutdown began, or with `full` while
    `--max-sessions` are live: a load balancer's health check then sends new visitors to
    another replica, since this one would refuse their offers."""
    pipeline = request.app.get(PIPELINE_KEY)
    sessions = request.app[SESSIONS_KEY]
    status = "draining" if sessions.draining else "full" if sessions.full else "ok"
    return web.json_response(
        {
            "status": status,
            "sessions": len(sessions),
            "max_sessions": sessions.max_sessions,
            "replica": request.app[CONFIG_KEY].server.replica_id,
            "models": pipeline.describe() if pipeline is not None else {},
        },
        status=200 if status == "ok" else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    pipeline = request.app.get(PIPELINE_KEY)
    body = pipeline.metrics.render() if pipeline is not None else b""
    return web.Response(body=body, content_type="text/plain", charset="utf-8")
