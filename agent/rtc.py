"""Closing an aiortc peer connection without leaving tasks behind."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection

CONNECT_SETTLE_S = 2.0


async def close_peer(pc: RTCPeerConnection) -> None:
    """`pc.close()`, then cancel consent checks that aioice started too late.

    When a peer hangs up while ICE checks are finishing, aioice's `connect()` can complete
    after `close()` and start its consent-freshness task on the closed connection; that task
    then loops forever. aiortc runs the connect in a task it does not keep, so find it, let
    it end (close() has failed its check list, so it ends promptly), and cancel any orphan.
    """
    connecting = [task for task in asyncio.all_tasks() if _is_connect_of(task, pc)]
    await pc.close()
    if connecting:
        await asyncio.wait(connecting, timeout=CONNECT_SETTLE_S)
    orphans = []
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
