"""The live sessions of one app: created by offers, each watched by a supervisor task that
closes it when any close reason arrives (peer closed or failed, keepalive, DELETE, shutdown)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from agent.session import Session

log = logging.getLogger(__name__)


class SessionRegistry:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        self._reserved = 0
        self.total_created = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def try_reserve(self) -> bool:
        """Hold a slot while an offer is being answered, so concurrent offers respect the cap."""
        if len(self._sessions) + self._reserved >= self.max_sessions:
            return False
        self._reserved += 1
        return True

    def release_reservation(self) -> None:
        self._reserved -= 1

    def add(self, session: Session) -> None:
        """Turn a reservation into a live session and start supervising it."""
        self._reserved -= 1
        self._sessions[session.id] = session
        self.total_created += 1
        task = asyncio.get_running_loop().create_task(
            self._supervise(session), name=f"supervise-{session.id}"
        )
        self._supervisors[session.id] = task

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

    async def close(self, session_id: str, reason: str) -> bool:
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session.request_close(reason)
        await session.wait_closed()
        return True

    async def close_all(self, reason: str) -> None:
        supervisors = list(self._supervisors.values())
        for session in list(self._sessions.values()):
            session.request_close(reason)
        await asyncio.gather(*supervisors, return_exceptions=True)
