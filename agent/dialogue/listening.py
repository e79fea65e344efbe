"""What a conversation hears the user with (its VAD, the shared end-of-turn model, the echo
mask), and the user's turns as the page sees them: their ids, and when the user's speech in
each starts and ends."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from agent import events
from agent.audio import Int16Array
from agent.dialogue.turn import EmitEvent
from agent.turntaking.segmenter import TurnEvent, TurnSegmenter


class VadLike(Protocol):
    def feed(self, block: Int16Array, wall_time: float) -> list[TurnEvent]: ...

    @property
    def segmenter(self) -> TurnSegmenter: ...


class EchoHold(Protocol):
    def hold(self) -> None: ...


class TurnModel(Protocol):
    def probability(self, audio: Int16Array) -> float:
        """P(the turn is complete), blocking."""
        ...


@dataclass(frozen=True)
class Listening:
    """How a session hears the user: its VAD, and the shared end-of-turn model if any."""

    vad: VadLike
    vad_executor: Executor
    turn_model: TurnModel | None = None
    turn_executor: Executor | None = None
    echo: EchoHold | None = None
    """The VAD's echo mask, told when the agent's voice stops for the user's."""


class UserTurns:
    """The user's turns: the open one's id, whether it is answered, and the user's speech
    start and end events for it (one of each, however often the user pauses)."""

    def __init__(self, emit: EmitEvent) -> None:
        self._emit = emit
        self.id = 0
        self.answered = False
        """The open utterance's turn is decided (its reply released)."""
        self._speaking = False

    def new(self) -> None:
        self.id += 1
        self.answered = False
        self._speaking = False
        self.speech_started()

    def take_back(self) -> None:
        """The sound that opened the turn was no turn of the user's (it was judged not to
        interrupt the agent)."""
        self.id -= 1
        self.answered = True  # the turn being answered is the one before it

    def speech_started(self) -> None:
        if not self._speaking:
            self._speaking = True
            self._emit(events.user_speech_start(self.id))

    def speech_ended(self, speech_ms: float, forced: bool, silence_ms: float = 0.0) -> None:
        if self._speaking:
            self._speaking = False
            self._emit(events.user_speech_end(self.id, speech_ms, forced, silence_ms))
