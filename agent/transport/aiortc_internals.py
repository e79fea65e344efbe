"""Every use of aiortc's and aioice's private internals, in one place.

aiortc has no public API for what these do: stopping the tasks it starts too late to stop
itself, telling whether a data channel's last message has been acknowledged, and choosing
which local addresses ICE gathers on. Each function below names the private attribute it
reads or replaces and why. They were verified against the versions in VERIFIED, which
pyproject.toml pins; tests/test_internals.py exercises each one on real objects and says
which feature breaks when a new version moves an attribute.

Attributes are read directly, never with a `getattr` default: a renamed attribute fails
loudly in the tests instead of quietly turning a feature off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer

VERIFIED = {"aiortc": "1.16.0", "aioice": "0.13.0"}
"""The versions these internals were read in and tested against (pinned in pyproject.toml)."""


def ice_transports(pc: RTCPeerConnection) -> list[Any]:
    """The RTCIceTransports of `pc`, including those of transceivers already gone: the
    name-mangled `RTCPeerConnection.__iceTransports` set, the only list aiortc keeps."""
    private: Any = pc  # mypy knows aiortc's public types only
    return list(private._RTCPeerConnection__iceTransports)


def ice_connection(ice_object: Any) -> Any:
    """The aioice `Connection` behind an RTCIceGatherer or RTCIceTransport (`_connection`)."""
    return ice_object._connection


def running_consent_task(connection: Any) -> asyncio.Task[None] | None:
    """aioice's consent-freshness task (`Connection._query_consent_task`) if it still runs.
    A connect that completes after `pc.close()` starts it on a closed connection, where it
    loops until cancelled."""
    task: asyncio.Task[None] | None = connection._query_consent_task
    return task if task is not None and not task.done() else None


def is_connect_task_of(task: asyncio.Task[Any], pc: RTCPeerConnection) -> bool:
    """Whether `task` runs `pc`'s private `__connect` coroutine, which aiortc starts without
    keeping the task: recognised by the coroutine's name and its frame's `self`."""
    coro = task.get_coro()
    frame = getattr(coro, "cr_frame", None)  # None once the coroutine has finished
    qualname: str = getattr(coro, "__qualname__", "")
    return frame is not None and qualname.endswith("__connect") and frame.f_locals.get("self") is pc


def sctp_unacknowledged(channel: RTCDataChannel) -> bool:
    """Whether anything sent on `channel` is still queued or unacknowledged: the channel's
    bufferedAmount, then the SCTP transport's `_data_channel_queue` (not yet chunked),
    `_outbound_queue` (not yet sent) and `_sent_queue` (sent, not yet acknowledged)."""
    sctp = channel.transport
    return bool(
        channel.bufferedAmount
        or sctp._data_channel_queue
        or sctp._outbound_queue
        or sctp._sent_queue
    )


def gathering_started(connection: Any) -> bool:
    """aioice's `Connection._local_candidates_start`: set once gathering has begun."""
    return bool(connection._local_candidates_start)


def narrow_host_addresses(connection: Any, keep: Callable[[list[str]], list[str]]) -> None:
    """Make this one aioice `Connection` gather host candidates only on `keep(addresses)`.
    `Connection.get_component_candidates(component, addresses, timeout)` is the one method
    that receives the address list before any socket is bound; an attribute on the instance
    shadows the class's method, so nothing process-wide changes."""
    gather = connection.get_component_candidates

    async def narrowed(component: int, addresses: list[str], timeout: int = 5) -> Any:
        return await gather(component=component, addresses=keep(addresses), timeout=timeout)

    connection.get_component_candidates = narrowed


AUDIO_JITTER_CAPACITY = 16
"""aiortc's own capacity for audio: 16 packets, 320 ms."""


def set_audio_jitter_prefetch(receiver: RTCRtpReceiver, frames: int) -> None:
    """Make an audio receiver release each frame once `frames` complete frames are buffered
    behind it. aiortc builds every audio receiver with `JitterBuffer(capacity=16,
    prefetch=4)` in `RTCRtpReceiver.__init__` (the name-mangled `__jitter_buffer`), which
    holds 4 x 20 ms before the first frame comes out, and offers no way to choose. A frame
    is complete when the next packet arrives, so 1 (or 0) is the least: one packet, 20 ms.
    Replace it before the first packet arrives."""
    private: Any = receiver
    private._RTCRtpReceiver__jitter_buffer = JitterBuffer(
        capacity=AUDIO_JITTER_CAPACITY, prefetch=frames
    )


def audio_jitter_prefetch(receiver: RTCRtpReceiver) -> int:
    private: Any = receiver
    prefetch: int = private._RTCRtpReceiver__jitter_buffer._prefetch
    return prefetch


__all__ = [
    "AUDIO_JITTER_CAPACITY",
    "VERIFIED",
    "audio_jitter_prefetch",
    "gathering_started",
    "ice_connection",
    "ice_transports",
    "is_connect_task_of",
    "narrow_host_addresses",
    "running_consent_task",
    "sctp_unacknowledged",
    "set_audio_jitter_prefetch",
]
