"""The live sessions of one app: created by offers, each watched by a supervisor task that
closes it when any close reason arrives (peer closed or failed, keepalive, DELETE, shutdown)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Literal

from agent.transport.session import Session

log = logging.getLogger(__name__)

Refusal = Literal["server full", "client full"]

DRAIN_REASON = "server shutting down"


class SessionRegistry:
    def __init__(self, max_sessions: int, max_per_client: int = 0) -> None:
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        """Live and reserved sessions per client key; 0: no per-client cap."""
        self._sessions: dict[str, Session] = {}
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        self._reserved = 0
        self._client_of: dict[str, str] = {}
        self._per_client: Counter[str] = Counter()
        self.draining = False
        """Set on shutdown: offers are refused and sessions closed."""

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    @property
    def full(self) -> bool:
        """Live and reserved sessions fill `max_sessions`: the next offer would be refused."""
        return len(self._sessions) + self._reserved >= self.max_sessions

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def sessions_of(self, client: str) -> int:
        return self._per_client[client]

    def try_reserve(self, client: str) -> Refusal | None:
        """Hold a slot while an offer is being answered, so concurrent offers respect the
        caps. None when held, else which cap refused it."""
        if self.full:
            return "server full"
        if self.max_per_client and self._per_client[client] >= self.max_per_client:
            return "client full"
        self._reserved += 1
        self._per_client[client] += 1
        return None

    def release_reservation(self, client: str) -> None:
        self._reserved -= 1
        self._release_client(client)

    def _release_client(self, client: str) -> None:
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]  # no entry per client that ever came

    def add(self, session: Session, client: str) -> None:
        """Turn a reservation into a live session and start supervising it."""
        self._reserved -= 1
        self._sessions[session.id] = session
        self._client_of[session.id] = client
        task = asyncio.get_running_loop().create_task(
            self._supervise(session), name=f"supervise-{session.id}"
        )
        self._supervisors[session.id] = task
        if self.draining:  # its offer was answered while the server began to shut down
            session.request_close(DRAIN_REASON)

    async def _supervise(self, session: Session) -> None:
        try:
            await session.wait_close_requested()
        finally:
            # Closing must finish even when shutdown cancels this supervisor.
            await asyncio.shield(self._close(session))

    async def _close(self, session: Session) -> None:
        try:
            await session.aclose()
        except Exception:
            log.exception("session %s: close failed", session.id)
        finally:
            self._sessions.pop(session.id, None)
            self._supervisors.pop(session.id, None)
            client = self._client_of.pop(session.id, None)
            if client is not None:
                self._release_client(client)

    async def close(self, session_id: str, reason: str) -> bool:
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session.request_close(reason)
        await session.wait_closed()
        return True

    async def drain(self) -> None:
        """Shutdown: refuse new sessions from now on and close every live one."""
        self.draining = True
        await self.close_all(DRAIN_REASON)

    async def close_all(self, reason: str) -> None:
        supervisors = list(self._supervisors.values())
        for session in list(self._sessions.values()):
            session.request_close(reason)
        await asyncio.gather(*supervisors, return_exceptions=True)
