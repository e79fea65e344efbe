"""Events the server sends on the "events" data channel. Each is a JSON object whose
`type` names it; builders here are the one place their shapes are written down."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


def user_speech_start(turn_id: int) -> dict[str, Any]:
    return {"type": "user_speech_start", "turn": turn_id}


def user_speech_end(
    turn_id: int, speech_ms: float, forced: bool, silence_ms: float = 0.0
) -> dict[str, Any]:
    """The user stopped speaking (a pause, the end of the utterance, or its length cap);
    `silence_ms`: how long after the last voiced audio the server noticed."""
    return {
        "type": "user_speech_end",
        "turn": turn_id,
        "speech_ms": round(speech_ms, 1),
        "forced": forced,
        "silence_ms": round(silence_ms, 1),
    }


def transcript(turn_id: int, text: str) -> dict[str, Any]:
    return {"type": "transcript", "turn": turn_id, "text": text}


def agent_text(turn_id: int, delta: str) -> dict[str, Any]:
    return {"type": "agent_text", "turn": turn_id, "delta": delta}


def agent_speech_start(turn_id: int) -> dict[str, Any]:
    return {"type": "agent_speech_start", "turn": turn_id}


def agent_speech_end(turn_id: int) -> dict[str, Any]:
    return {"type": "agent_speech_end", "turn": turn_id}


def turn_pending(turn_id: int, probability: float | None, reason: str) -> dict[str, Any]:
    """The user paused, but the turn does not look finished (`reason`: "prosody", Smart
    Turn's verdict; "words", the transcript stops mid-phrase; "unsure word", Whisper is unsure
    of a last word after words that stop mid-phrase): the agent waits."""
    return {
        "type": "turn_pending",
        "turn": turn_id,
        "probability": None if probability is None else round(probability, 3),
        "reason": reason,
    }


def interrupted(
    turn_id: int, heard: str, *, false_interruption: bool = False, resumed: bool = False
) -> dict[str, Any]:
    """`heard` is the agent's text that was actually played before the user cut in. A false
    interruption is a sound that paused the agent but was not the user taking the turn (a
    cough, a backchannel, its own echo); `resumed`: the agent went on where it paused."""
    return {
        "type": "interrupted",
        "turn": turn_id,
        "heard": heard,
        "false_interruption": false_interruption,
        "resumed": resumed,
    }


def error(message: str, turn_id: int | None = None) -> dict[str, Any]:
    return {"type": "error", "turn": turn_id, "message": message}


@dataclass
class TurnMetrics:
    """Milliseconds after the end of the user's speech, unless said otherwise. A stage that
    did not happen (no reply, an interruption) stays None."""

    endpoint_ms: float | None = None
    stt_done_ms: float | None = None
    llm_first_token_ms: float | None = None
    first_chunk_ms: float | None = None
    tts_first_audio_ms: float | None = None
    first_frame_sent_ms: float | None = None
    llm_queue_wait_ms: float | None = None
    """Time the turn waited for the shared LLM (not relative to end of speech)."""
    prompt_tokens: int | None = None
    prompt_tokens_evaluated: int | None = None
    """Prompt tokens not covered by the reused prefix: the ones the model had to evaluate."""
    completion_tokens: int | None = None
    stt_audio_ms: float | None = None
    stt_ms: float | None = None
    """Compute time of the transcription alone (not relative to end of speech)."""
    stt_window_s: float | None = None
    """Seconds of Whisper window the transcript came from: 30 is the full window (the
    audio was too long for a cut one, or the guard fell back to it)."""
    endpoint: str | None = None
    """What ended the turn: "semantic", "silence", "ceiling" or "forced"."""
    turn_probability: float | None = None
    """Smart Turn's P(complete) at the pause that ended the turn."""
    speculation: str | None = None
    """"used": the reply prepared in the pause was ready when the turn ended; "late": it was
    still being prepared; "none": no speculation."""
    reply_sentences: int | None = None
    finish_reason: str | None = None
    reply_retried: bool = False
    """The reply began by copying what was just said and was asked for again
    (agent/dialogue/copying.py)."""
    interrupted: bool = False

    STAGES = (
        "endpoint_ms",
        "stt_done_ms",
        "llm_first_token_ms",
        "first_chunk_ms",
        "tts_first_audio_ms",
        "first_frame_sent_ms",
    )

    def event(self, turn_id: int) -> dict[str, Any]:
        values = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        return {"type": "turn_metrics", "turn": turn_id, **values}
