"""MMS-TTS voices (Meta's VITS models for over 1,000 languages, `facebook/mms-tts-<iso>`),
run through transformers' VitsModel. Same interface as Piper: one chunk in, int16 PCM out,
called in the TTS worker thread; its 16 kHz output is resampled by the track."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from agent.audio import Int16Array

log = logging.getLogger(__name__)


class MmsSynthesizer:
    def __init__(self, model: Any, tokenizer: Any, device: str = "cpu") -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._romanize = _romanizer() if getattr(tokenizer, "is_uroman", False) else None

    @property
    def sample_rate(self) -> int:
        return int(self._model.config.sampling_rate)

    def synthesize(self, text: str, *, urgent: bool = False) -> Int16Array:
        # `urgent` changes nothing: torch keeps its own threads (or the GPU) for every chunk.
        import torch

        if self._romanize is not None:
            # Voices of non-Latin scripts were trained on romanized text.
            text = self._romanize(text)
        inputs = self._tokenizer(text, return_tensors="pt")
        input_ids = inputs["input_ids"]
        # The tokenizer drops characters outside its vocabulary and puts a blank between the
        # rest: a chunk of only such characters (digits, emoji) leaves blanks or nothing.
        if input_ids.shape[-1] <= 1:
            return np.zeros(0, dtype=np.int16)
        with torch.inference_mode():
            waveform = self._model(
                input_ids=input_ids.to(self._device),
                attention_mask=inputs["attention_mask"].to(self._device),
            ).waveform[0]
        audio = waveform.float().cpu().numpy()
        pcm: Int16Array = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
        return pcm


def _romanizer() -> Any:
    """uroman, as the MMS voices of non-Latin scripts expect (the `mms` extra installs it)."""
    try:
        import uroman
    except ImportError:
        log.warning(
            "this MMS voice expects romanized text and uroman is not installed "
            '(pip install "voice-agent[mms]"): text is passed as written'
        )
        return None
    romanizer = uroman.Uroman()
    return romanizer.romanize_string


__all__ = ["MmsSynthesizer"]
