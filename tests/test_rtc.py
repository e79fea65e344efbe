"""agent.transport.rtc.close_peer: a peer connection closed at any moment of its setup leaves
no task behind, even when aiortc's own close() fails."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCDataChannel, RTCDtlsTransport, RTCPeerConnection, RTCSctpTransport
from aiortc.mediastreams import AudioStreamTrack

from agent.transport.rtc import close_peer, drain_channel


async def offer_answer() -> tuple[RTCPeerConnection, RTCPeerConnection]:
    """Two real peers on loopback, negotiated; ICE and DTLS now run in aiortc's tasks."""
    caller, callee = RTCPeerConnection(), RTCPeerConnection()
    caller.addTrack(AudioStreamTrack())
    caller.createDataChannel("events")
    callee.on("track", lambda track: callee.addTrack(AudioStreamTrack()))
    await caller.setLocalDescription(await caller.createOffer())
    await callee.setRemoteDescription(caller.localDescription)
    await callee.setLocalDescription(await callee.createAnswer())
    await caller.setRemoteDescription(callee.localDescription)
    return caller, callee


def rtp_tasks() -> list[asyncio.Task[object]]:
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").endswith(
            ("._run_rtcp", "._run_rtp", "._query_consent")
        )
    ]


async def wait_for_no_rtp_tasks() -> None:
    for _ in range(50):
        if not rtp_tasks():
            return
        await asyncio.sleep(0.02)


async def test_a_handshake_finishing_inside_close_starts_nothing_that_outlives_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race, made certain: DTLS completes while close() is stopping the data channel,
    so aiortc's connect task starts the RTP sender and receiver on a connection being
    closed. Their RTCP loops then ran forever (seen as leaked tasks in the test suite)."""
    close_underway = asyncio.Event()
    dtls_start, sctp_stop = RTCDtlsTransport.start, RTCSctpTransport.stop

    async def start_then_wait_for_close(self: RTCDtlsTransport, parameters: object) -> None:
        await dtls_start(self, parameters)
        await close_underway.wait()

    async def stop_letting_connect_run(self: RTCSctpTransport) -> None:
        close_underway.set()
        for _ in range(10):
            await asyncio.sleep(0)
        await sctp_stop(self)

    monkeypatch.setattr(RTCDtlsTransport, "start", start_then_wait_for_close)
    monkeypatch.setattr(RTCSctpTransport, "stop", stop_letting_connect_run)
    caller, callee = await offer_answer()
    for _ in range(200):
        if callee.getTransceivers()[0].receiver.transport.state == "connected":
            break
        await asyncio.sleep(0.02)
    assert callee.getTransceivers()[0].receiver.transport.state == "connected"
    assert rtp_tasks() == [], "nothing runs until close() starts"
    await close_peer(callee)
    await close_peer(caller)
    await wait_for_no_rtp_tasks()
    assert rtp_tasks() == []


@pytest.mark.parametrize("delay_s", [0.0, 0.02, 0.1, 0.3])
async def test_closing_during_setup_leaves_no_rtp_or_consent_task(delay_s: float) -> None:
    """Hang up at moments spread over ICE and the DTLS handshake: the window in which
    aiortc's connect task used to start RTCP loops on a connection already closed."""
    caller, callee = await offer_answer()
    await asyncio.sleep(delay_s)
    await asyncio.gather(close_peer(callee), close_peer(caller))
    await wait_for_no_rtp_tasks()
    assert rtp_tasks() == []
    assert caller.connectionState == callee.connectionState == "closed"


async def test_a_failing_close_still_stops_senders_and_receivers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caller, callee = await offer_answer()
    for _ in range(100):
        if caller.connectionState == "connected" and callee.connectionState == "connected":
            break
        await asyncio.sleep(0.02)
    assert callee.connectionState == "connected"
    assert rtp_tasks(), "a connected pair runs RTP and RTCP tasks"
    real_close = RTCPeerConnection.close

    async def broken_close(self: RTCPeerConnection) -> None:
        raise AttributeError("'NoneType' object has no attribute 'stop'")

    monkeypatch.setattr(RTCPeerConnection, "close", broken_close)
    await close_peer(callee)  # logs the failure, raises nothing
    monkeypatch.setattr(RTCPeerConnection, "close", real_close)
    callee_tasks = [t for t in rtp_tasks() if not t.done()]
    await close_peer(caller)
    await callee.close()  # the transports, which the broken close never reached
    await wait_for_no_rtp_tasks()
    assert rtp_tasks() == [], callee_tasks


async def connected_channels() -> tuple[
    RTCPeerConnection, RTCPeerConnection, RTCDataChannel, asyncio.Queue[str]
]:
    """A caller and callee with an open data channel; the caller's messages land in a
    queue. Returns (caller, callee, the callee's channel, the caller's inbox)."""
    caller, callee = RTCPeerConnection(), RTCPeerConnection()
    inbox: asyncio.Queue[str] = asyncio.Queue()
    channel = caller.createDataChannel("events")
    channel.on("message", inbox.put_nowait)
    opened: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()

    def on_datachannel(remote: RTCDataChannel) -> None:
        remote.on("open", lambda: opened.done() or opened.set_result(remote))
        if remote.readyState == "open" and not opened.done():
            opened.set_result(remote)

    callee.on("datachannel", on_datachannel)
    await caller.setLocalDescription(await caller.createOffer())
    await callee.setRemoteDescription(caller.localDescription)
    await callee.setLocalDescription(await callee.createAnswer())
    await caller.setRemoteDescription(callee.localDescription)
    remote = await asyncio.wait_for(opened, 10)
    return caller, callee, remote, inbox


async def test_a_last_message_is_delivered_before_the_connection_closes() -> None:
    """The `closing` event: sent, drained, then the association is aborted by close()."""
    for attempt in range(5):
        caller, callee, channel, inbox = await connected_channels()
        try:
            channel.send("x" * 2000)  # more than one SCTP chunk
            channel.send(f"closing {attempt}")
            assert await drain_channel(channel, timeout=2.0)
            await close_peer(callee)
            received = [await asyncio.wait_for(inbox.get(), 2) for _ in range(2)]
            assert received[-1] == f"closing {attempt}"
        finally:
            await close_peer(callee)
            await close_peer(caller)


async def test_draining_a_channel_whose_peer_is_gone_gives_up_at_the_timeout() -> None:
    caller, callee, channel, _ = await connected_channels()
    try:
        caller_transport = caller.sctp.transport.transport if caller.sctp else None
        assert caller_transport is not None
        await caller_transport.stop()  # the peer's network goes; no ABORT, no more SACKs
        channel.send("anyone?")
        started = asyncio.get_running_loop().time()
        drained = await drain_channel(channel, timeout=0.2)
        elapsed = asyncio.get_running_loop().time() - started
        assert elapsed < 1.0
        assert not drained or channel.readyState != "open"
    finally:
        await close_peer(callee)
