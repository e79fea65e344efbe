"""Whisper's own errors: the audio whose words are scored, transcribed directly by the same
model the server uses, with no turn-taking in between (run after the server has stopped, so
that it costs the measured cases nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent.languages import ENGLISH
from agent.models.device import detect_device
from agent.models.loaders import load_whisper
from agent.stages.stt import Transcriber
from benchmarks.corpus import Utterance
from benchmarks.stt_corpus import as_utterance
from benchmarks.turns.corpus import Case
from benchmarks.turns.run import Observation


def scored_audio(case: Case) -> Utterance | None:
    """What the words of the case are scored on: the user's turn, or the interruption."""
    if case.category in ("complete", "incomplete"):
        return case.utterance
    if case.category == "interruption":
        return case.stimulus
    return None


def transcribe_directly(
    cases: Sequence[Case], observations: Sequence[Observation], whisper: Path, device: str = "cpu"
) -> None:
    """Fill in each observation's `direct_transcript` (where its case has words to score)."""
    model = load_whisper(whisper, detect_device(device))
    with ThreadPoolExecutor(1, thread_name_prefix="baseline-stt") as executor:
        transcriber = Transcriber(model, ENGLISH.whisper, executor)
        for case, observation in zip(cases, observations, strict=True):
            audio = scored_audio(case)
            if audio is not None:
                clip = as_utterance(audio.pcm, audio.rate)
                observation.direct_transcript = transcriber.transcribe_blocking(clip).text.strip()


__all__ = ["scored_audio", "transcribe_directly"]
