"""Closing an aiortc peer connection without leaving tasks behind."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiortc import RTCDataChannel, RTCPeerConnection

log = logging.getLogger(__name__)

CONNECT_SETTLE_S = 2.0
DRAIN_POLL_S = 0.01


async def drain_channel(channel: RTCDataChannel | None, timeout: float) -> bool:
    """Wait (at most `timeout`) until everything sent on `channel` has been acknowledged
    by the peer. Closing the peer connection aborts the SCTP association at once, so a last
    message still queued or in flight (the `closing` event) would otherwise be lost: the
    page then reports a dropped connection instead of the server's reason."""
    if channel is None or channel.readyState != "open":
        return True
    sctp = channel.transport
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        pending = (
            channel.bufferedAmount
            or getattr(sctp, "_data_channel_queue", None)
            or getattr(sctp, "_outbound_queue", None)
            or getattr(sctp, "_sent_queue", None)
        )
        if not pending:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(DRAIN_POLL_S)


async def close_peer(pc: RTCPeerConnection) -> None:
    """`pc.close()`, then stop what aiortc started too late to be stopped by it.

    When a peer hangs up while ICE and DTLS are finishing, aiortc's connect task (which it
    does not keep) can complete after `close()`: aioice then starts its consent-freshness
    task, and a DTLS handshake that just succeeded starts the RTP sender's and receiver's
    RTCP tasks, on a closed connection; they loop forever. So find that task, let it end
    (close() has failed its check list, so it ends promptly), then stop the senders and
    receivers again (stop() is idempotent) and cancel any orphan consent task.
    """
    connecting = [task for task in asyncio.all_tasks() if _is_connect_of(task, pc)]
    try:
        await pc.close()
    except Exception:
        # A half-built connection (an offer aiortc accepted but could not answer) can
        # fail inside close(); what it left running is stopped below all the same.
        log.warning("closing a peer connection failed; stopping its parts", exc_info=True)
    if connecting:
        _, pending = await asyncio.wait(connecting, timeout=CONNECT_SETTLE_S)
        for stuck in pending:
            stuck.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for transceiver in pc.getTransceivers():
        for part in (transceiver.sender, transceiver.receiver):
            with contextlib.suppress(Exception):
                await part.stop()
    orphans: list[asyncio.Task[object]] = []
    for transport in getattr(pc, "_RTCPeerConnection__iceTransports", ()):
        connection = getattr(transport, "_connection", None)
        task = getattr(connection, "_query_consent_task", None)
        if isinstance(task, asyncio.Task) and not task.done():
            task.cancel()
            orphans.append(task)
    await asyncio.gather(*orphans, return_exceptions=True)


def _is_connect_of(task: asyncio.Task[object], pc: RTCPeerConnection) -> bool:
    coro = task.get_coro()
    frame = getattr(coro, "cr_frame", None)
    return (
        frame is not None
        and getattr(coro, "__qualname__", "").endswith("__connect")
        and frame.f_locals.get("self") is pc
    )
