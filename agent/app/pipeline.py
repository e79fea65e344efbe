"""What the signaling layer needs from the conversation pipeline: a sink per session and a
description of the loaded models."""

from __future__ import annotations

from typing import Any, Protocol

from agent.metrics import Metrics
from agent.transport.session import AudioSink, Session


class Pipeline(Protocol):
    metrics: Metrics

    def attach(self, session: Session) -> AudioSink:
        """Create the per-session consumer of the user's audio."""
        ...

    def describe(self) -> dict[str, Any]:
        """What is loaded and on which device, for /health."""
        ...
