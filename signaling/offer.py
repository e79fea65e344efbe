"""POST /offer: validate the client's offer, build the peer connection and session, answer.

aiortc accepts some junk (an empty SDP answers with no media) and fails on other junk with
ValueError, AssertionError, IndexError or KeyError, so the offer is checked here first and
every failure after that still closes the half-built peer connection.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from agent.config import ServerConfig
from agent.transport.rtc import set_inbound_audio_buffering
from agent.transport.session import Session, SinkFactory
from signaling.ice import HostAddressFilter, IceFilterError

log = logging.getLogger(__name__)


class OfferError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Offer:
    sdp: str


async def read_offer(request: web.Request, max_bytes: int) -> Offer:
    if request.content_length is not None and request.content_length > max_bytes:
        raise OfferError(413, f"offer body is larger than {max_bytes} bytes")
    body = await request.content.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise OfferError(413, f"offer body is larger than {max_bytes} bytes")
    return parse_offer(body)


def parse_offer(body: bytes) -> Offer:
    try:
        payload: Any = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: json.loads on deeply nested arrays (found by tests/test_fuzz_offers).
        raise OfferError(400, f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise OfferError(400, "body must be a JSON object with 'sdp' and 'type'")
    for key in ("sdp", "type"):
        if key not in payload:
            raise OfferError(400, f"missing field '{key}'")
        if not isinstance(payload[key], str):
            raise OfferError(400, f"field '{key}' must be a string")
    if payload["type"] != "offer":
        raise OfferError(400, f"type must be 'offer', not {payload['type']!r}")
    validate_sdp(payload["sdp"])
    return Offer(sdp=payload["sdp"])


def validate_sdp(text: str) -> None:
    if not text.strip().startswith("v=0"):
        raise OfferError(400, "sdp must start with 'v=0'")
    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # the parser raises whatever its internals raise
        raise OfferError(400, f"sdp does not parse: {type(exc).__name__}: {exc}") from None
    audio = [m for m in description.media if m.kind == "audio"]
    if len(audio) != 1:
        raise OfferError(400, f"sdp must have exactly one audio section, found {len(audio)}")
    others = [m.kind for m in description.media if m.kind not in ("audio", "application")]
    if others:
        raise OfferError(400, f"sdp has unsupported media sections: {', '.join(others)}")
    # aiortc trusts mids and BUNDLE groups: a section without its own mid, or a group naming
    # a missing one, leaves a section without a transport, and createAnswer and close() then
    # fail with AttributeError, half-closed (found by tests/test_fuzz_offers).
    mids = [m.rtp.muxId for m in description.media]
    if not all(mids) or len(set(mids)) != len(mids):
        raise OfferError(400, "every media section needs its own a=mid")
    for group in description.group:
        if group.semantic == "BUNDLE" and any(mid not in mids for mid in group.items):
            raise OfferError(400, "a=group:BUNDLE names a media section that is not in the sdp")
    media = audio[0]
    if media.direction not in (None, "sendrecv", "sendonly"):
        raise OfferError(400, f"the audio section must send the microphone, not {media.direction}")
    if not any(c.mimeType.lower() == "audio/opus" for c in media.rtp.codecs):
        raise OfferError(400, "the audio section must offer Opus")
    ice = media.ice  # the parser copies session-level ICE attributes into each media
    if ice is None or not ice.usernameFragment or not ice.password:
        raise OfferError(400, "sdp lacks ICE credentials (a=ice-ufrag / a=ice-pwd)")
    if media.dtls is None or not media.dtls.fingerprints:
        raise OfferError(400, "sdp lacks a DTLS fingerprint")


def peer_configuration(config: ServerConfig) -> RTCConfiguration:
    # An explicit (possibly empty) list: aiortc's default public STUN server stalls offers
    # for 5 s on a machine without internet.
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in config.ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


def new_session_id(replica_id: str | None) -> str:
    """Random, and prefixed with the replica's id (`r1-…`) so that a load balancer can send
    the session's later requests to the replica that owns it."""
    return f"{replica_id}-{uuid.uuid4().hex}" if replica_id else uuid.uuid4().hex


async def answer_offer(
    offer: Offer, config: ServerConfig, sink_factory: SinkFactory | None
) -> Session:
    """Build a peer connection and its session, and set the answer (ICE gathering complete).
    The caller starts and registers the session. On failure nothing is left open."""
    pc = RTCPeerConnection(peer_configuration(config))
    session = Session(
        new_session_id(config.replica_id),
        pc,
        keepalive_timeout_s=config.keepalive_timeout_s,
        idle_timeout_s=config.idle_timeout_s,
        max_session_s=config.max_session_s,
        sink_factory=sink_factory,
    )
    started = time.perf_counter()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        set_inbound_audio_buffering(pc, config.jitter_frames)
        pc.addTrack(session.output)
        answer = await pc.createAnswer()
        # Every transport exists now (addTrack may add one); gathering starts below.
        HostAddressFilter.from_config(config).apply(pc)
        await pc.setLocalDescription(answer)  # aiortc returns once gathering is complete
    except IceFilterError as exc:
        await session.aclose()
        log.error("session %s: %s", session.id, exc)
        raise OfferError(500, str(exc)) from None
    except Exception as exc:
        await session.aclose()
        raise OfferError(400, f"offer rejected: {type(exc).__name__}: {exc}") from None
    except BaseException:
        await session.aclose()
        raise
    log.info("session %s: answered in %.1f ms", session.id, (time.perf_counter() - started) * 1000)
    return session
