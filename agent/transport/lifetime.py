"""How long a session may live: closed after `idle_timeout_s` without user speech, and after
`max_session_s` in any case. A user who is speaking is never idle, however long the
utterance. Pure bookkeeping on a monotonic clock the caller passes in, so it is tested with
a scripted clock; the session's watchdog asks it for a verdict."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Lifetime:
    idle_timeout_s: float = 0.0
    """0: never closed for silence."""
    max_session_s: float = 0.0
    """0: no maximum."""
    _started: float = field(default=0.0, init=False)
    _last_activity: float = field(default=0.0, init=False)
    _speaking: bool = field(default=False, init=False)

    def start(self, now: float) -> None:
        self._started = self._last_activity = now

    def note_activity(self, now: float) -> None:
        self._last_activity = max(self._last_activity, now)

    def speech_started(self, now: float) -> None:
        self.note_activity(now)
        self._speaking = True

    def speech_ended(self, now: float) -> None:
        self.note_activity(now)
        self._speaking = False

    @property
    def check_period_s(self) -> float:
        """How often to ask `expired`, so a verdict comes at most a quarter-limit late."""
        limits = [s for s in (self.idle_timeout_s, self.max_session_s) if s > 0]
        return min(limits) / 4 if limits else float("inf")

    def expired(self, now: float) -> str | None:
        """Why the session must close now, or None."""
        if self.max_session_s > 0 and now - self._started >= self.max_session_s:
            return f"the session reached its maximum length of {self.max_session_s:g} s"
        idle = not self._speaking and now - self._last_activity >= self.idle_timeout_s
        if self.idle_timeout_s > 0 and idle:
            return f"no speech for {self.idle_timeout_s:g} s"
        return None
