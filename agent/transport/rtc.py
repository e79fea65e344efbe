"""Closing an aiortc peer connection without leaving tasks behind."""

from __future__ import annotations

import asyncio
import logging

from aiortc import RTCDataChannel, RTCPeerConnection

from agent.transport import aiortc_internals

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
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if not aiortc_internals.sctp_unacknowledged(channel):
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
    connecting = [t for t in asyncio.all_tasks() if aiortc_internals.is_connect_task_of(t, pc)]
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
            try:
                await part.stop()
            except Exception:  # a part close() already stopped, or one never started
                log.warning("stopping %s after close failed", type(part).__name__, exc_info=True)
    orphans: list[asyncio.Task[None]] = []
    for transport in aiortc_internals.ice_transports(pc):
        task = aiortc_internals.running_consent_task(aiortc_internals.ice_connection(transport))
        if task is not None:
            task.cancel()
            orphans.append(task)
    await asyncio.gather(*orphans, return_exceptions=True)


def set_inbound_audio_buffering(pc: RTCPeerConnection, frames: int) -> None:
    """Hold `frames` complete 20 ms frames (at least one: the next packet completes a frame)
    in each audio receiver's jitter buffer before releasing one; aiortc's own is 4."""
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "audio":
            aiortc_internals.set_audio_jitter_prefetch(transceiver.receiver, frames)
