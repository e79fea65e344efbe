"""One greedy Whisper decode over a window shorter than 30 s: the adapter to faster-whisper's
internals and CTranslate2 that `agent.stages.stt` needs, kept in this one module.

Why an adapter: faster-whisper 1.2.1 pads every encoder input to 3,000 feature frames (30 s).
Its public `chunk_length` does not change that (`generate_segments` pads each segment with
`pad_or_trim`, whose length is fixed at 3,000), and the encoder's cost follows its input
length. CTranslate2's `Whisper.encode`/`generate` (public API) accept fewer frames. What this
module reads from faster-whisper, written for 1.2.1 (pinned in pyproject.toml) and to be
checked on every upgrade:
  - `WhisperModel.model` (the `ctranslate2.models.Whisper`), `.hf_tokenizer`, `.feat_kwargs`;
  - `faster_whisper.tokenizer.Tokenizer` (the prompt: start of transcript, language, task);
  - `faster_whisper.transcribe.get_suppressed_tokens`, so the cut decode suppresses exactly
    the tokens faster-whisper's own `transcribe` does.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.audio import STT_RATE

FULL_WINDOW_FRAMES = 3000
"""What faster-whisper pads every input to: 30 s of 10 ms feature frames."""
FRAMES_PER_SECOND = 100
MAX_TEXT_TOKENS = 224
"""CTranslate2's Whisper generates at most half its `max_length` (Whisper's own sample
length, 448 // 2), whatever the prompt."""
PROBE_TEXT = " Hello, how are you doing today? I am fine."
"""Forced after the prompt to time a decoder: CTranslate2 decodes a prompt one step per
token, so this costs what generating as many tokens does."""
PROBE_FRAMES = 1000
"""The window the probe decodes on: 10 s, the cut window's minimum (agent.stages.stt_guard)."""
PROBE_ROUNDS = 3


@dataclass(frozen=True)
class DecoderChoice:
    """Which of the two decoders `WhisperWindow.choose_decoder` kept, and what it timed."""

    one_thread: bool
    one_thread_ms: float
    model_threads_ms: float
    """The probe's decode on each, the fastest of `PROBE_ROUNDS` (`PROBE_TEXT`)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "decoder": "one thread" if self.one_thread else "the model's threads",
            "probe_ms": {
                "one_thread": round(self.one_thread_ms, 1),
                "model_threads": round(self.model_threads_ms, 1),
            },
        }


@dataclass(frozen=True)
class WindowDecode:
    text: str
    language: str
    language_probability: float | None
    """Of the language detected on this window; None when the language was given."""
    no_speech_prob: float
    tokens: int
    """Text tokens generated (the end-of-text token not counted)."""
    token_limit: int
    avg_logprob: float
    """Mean log probability per token, end of text included (as faster-whisper counts it)."""
    frames: int
    """Feature frames the encoder saw (100 per second)."""
    last_word_probability: float | None = None
    """How sure Whisper is of the text's last word: the mean probability of its tokens, marks
    aside (a sentence's "." says how sure Whisper is that it ended, not of the word); None
    when not asked for."""

    @property
    def hit_token_limit(self) -> bool:
        """Stopped by the limit, not by Whisper's end of text: a loop, or text cut short."""
        return self.tokens >= self.token_limit


class WhisperWindow:
    """Greedy decodes of one `faster_whisper.WhisperModel` on windows of any length up to
    30 s. Holds nothing between calls but the prompt of each language; call it from the
    transcription worker thread.

    `one_thread_decoder`: the same model loaded again on one thread
    (`agent.models.loaders.load_whisper_decoder`), a candidate for the decoder's part (text
    generation, alignment, language detection) while the encoder keeps every core; it is
    used once `choose_decoder` has timed it faster."""

    def __init__(self, model: Any, one_thread_decoder: Any | None = None) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        self._model = model
        self._ct2 = model.model
        self._decoder = self._ct2
        self._candidate = one_thread_decoder
        self.multilingual = bool(self._ct2.is_multilingual)
        # The mel bins are the model's (80, or 128 for large-v3), whatever the directory's
        # preprocessor_config.json says or lacks.
        accepted = inspect.signature(FeatureExtractor.__init__).parameters
        kwargs = {k: v for k, v in dict(getattr(model, "feat_kwargs", {})).items() if k in accepted}
        kwargs["feature_size"] = int(self._ct2.n_mels)
        self._features = FeatureExtractor(**kwargs)
        if self._features.sampling_rate != STT_RATE:
            raise ValueError(
                f"Whisper model expects {self._features.sampling_rate} Hz audio, not {STT_RATE}"
            )
        self._prompts: dict[str, tuple[list[int], list[int], Any]] = {}

    @property
    def n_mels(self) -> int:
        return int(self._ct2.n_mels)

    def content_frames(self, samples: int) -> int:
        """Feature frames holding `samples` of audio (as faster-whisper counts them)."""
        return int(samples // self._features.hop_length)

    def decode(
        self,
        audio: np.ndarray,
        frames: int,
        language: str | None,
        max_new_tokens: int,
        *,
        score_last_word: Callable[[str], bool] | None = None,
    ) -> WindowDecode:
        """Encode `audio` (float32, 16 kHz) in a window of `frames` feature frames (the
        audio's own, then zeros, as faster-whisper pads), then decode greedily.
        `language` None: detected on this window (multilingual models).
        `score_last_word`: for the texts it is true of, the last word's probability is
        computed too (a forced alignment: about 20 ms for Whisper base on 2 cores)."""
        encoded, content = self._encode(audio, frames)
        probability = None
        if not self.multilingual:
            language = "en"  # as faster-whisper does for English-only models
        elif language is None:
            language, probability = self._detect_language(encoded)
        _, _, tokenizer = self._prompt(language)
        limit = max(1, min(max_new_tokens, MAX_TEXT_TOKENS))
        result = self.generate(encoded, language, limit)
        generated = len(result.sequences_ids[0])
        # CTranslate2 scores are log probabilities summed and divided by the length.
        logprob_sum = result.scores[0] * generated
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(tokens).strip()
        last_word = None
        if score_last_word is not None and tokens and score_last_word(text):
            last_word = self._word_probabilities(encoded, content, tokens, tokenizer)[-1][1]
        return WindowDecode(
            text=text,
            language=language,
            language_probability=probability,
            no_speech_prob=float(result.no_speech_prob),
            tokens=generated,
            token_limit=limit,
            avg_logprob=float(logprob_sum / (generated + 1)),
            frames=frames,
            last_word_probability=last_word,
        )

    def generate(
        self, encoded: Any, language: str, max_new_tokens: int, prefix: Sequence[int] = ()
    ) -> Any:
        """CTranslate2's greedy result on an encoder output, with the prompt and suppressed
        tokens faster-whisper's own `transcribe` uses; `prefix`: text tokens forced after
        the prompt (returned with the generated ones)."""
        return self._generate_on(self._decoder, encoded, language, max_new_tokens, prefix)

    def _generate_on(
        self,
        decoder: Any,
        encoded: Any,
        language: str,
        max_new_tokens: int,
        prefix: Sequence[int] = (),
    ) -> Any:
        prompt, suppress, _ = self._prompt(language if self.multilingual else "en")
        prompt = [*prompt, *prefix]
        return decoder.generate(
            encoded,
            [prompt],
            beam_size=1,
            # CTranslate2 stops at min(max_length / 2, max_length - prompt) new tokens.
            max_length=max(2 * max_new_tokens, len(prompt) + max_new_tokens),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppress,
        )[0]

    def choose_decoder(self) -> DecoderChoice | None:
        """Time the one-thread candidate against the model's own threads on the same probe,
        rounds alternating, and keep the faster (the other is dropped: its memory is freed).
        None without a candidate. Call once, before the first decode, from the worker."""
        candidate, self._candidate = self._candidate, None
        if candidate is None:
            return None
        encoded, _ = self._encode(np.zeros(STT_RATE, dtype=np.float32), PROBE_FRAMES)
        _, _, tokenizer = self._prompt("en")
        probe = tokenizer.encode(PROBE_TEXT)
        times: dict[bool, list[float]] = {True: [], False: []}
        for round_ in range(PROBE_ROUNDS + 1):
            for one_thread, decoder in ((True, candidate), (False, self._ct2)):
                started = time.perf_counter()
                self._generate_on(decoder, encoded, "en", 1, probe)
                if round_:  # the first round warms both up (buffers, caches)
                    times[one_thread].append((time.perf_counter() - started) * 1000)
        # The fastest round: the machine's other work only ever adds to a time.
        choice = DecoderChoice(
            one_thread=min(times[True]) < min(times[False]),
            one_thread_ms=min(times[True]),
            model_threads_ms=min(times[False]),
        )
        if choice.one_thread:
            self._decoder = candidate
        return choice

    def word_probabilities(
        self, audio: np.ndarray, frames: int, language: str, text: str
    ) -> list[tuple[str, float]]:
        """How sure Whisper is of each word of `text` as the transcript of `audio`: the
        forced alignment `decode` scores a last word with, for any text."""
        encoded, content = self._encode(audio, frames)
        _, _, tokenizer = self._prompt(language if self.multilingual else "en")
        tokens = tokenizer.encode(" " + text.strip())
        return self._word_probabilities(encoded, content, tokens, tokenizer)

    def _encode(self, audio: np.ndarray, frames: int) -> tuple[Any, int]:
        """The encoder's output for `audio` in a window of `frames`, and the frames of
        audio in it."""
        import ctranslate2

        features = self._features(audio)[:, :-1]  # the last frame is past the audio
        content = int(features.shape[1])
        if content > frames:
            raise ValueError(f"audio needs {content} frames, window is {frames}")
        if frames > FULL_WINDOW_FRAMES:
            raise ValueError(f"a window holds at most {FULL_WINDOW_FRAMES} frames, not {frames}")
        features = np.pad(features, ((0, 0), (0, frames - content)))
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None]))
        # As faster-whisper does: on several GPUs the next call may run on another one.
        to_cpu = self._ct2.device == "cuda" and len(self._ct2.device_index) > 1
        return self._ct2.encode(storage, to_cpu=to_cpu), content

    def _word_probabilities(
        self, encoded: Any, content: int, tokens: list[int], tokenizer: Any
    ) -> list[tuple[str, float]]:
        """Words of `tokens` with their tokens' mean probability given the audio, marks
        aside. A word starts at a token that starts with a space, as faster-whisper splits
        words; a mark stays with the word before it, unscored."""
        aligned = self._decoder.align(encoded, tokenizer.sot_sequence, [tokens], content)[0]
        words: list[tuple[str, list[float]]] = []
        for token, probability in zip(tokens, aligned.text_token_probs, strict=True):
            piece = tokenizer.decode([token])
            scored = [probability] if any(c.isalnum() for c in piece) else []
            if not words or (piece.startswith(" ") and scored):
                words.append((piece.strip(), scored))
            else:
                word, probabilities = words[-1]
                words[-1] = (word + piece, probabilities + scored)
        return [(word, float(np.mean(p)) if p else 1.0) for word, p in words]

    def _detect_language(self, encoded: Any) -> tuple[str, float]:
        best_token, probability = self._decoder.detect_language(encoded)[0][0]
        return str(best_token)[2:-2], float(probability)  # "<|en|>" -> "en"

    def _prompt(self, language: str) -> tuple[list[int], list[int], Any]:
        """(prompt ids, suppressed ids, tokenizer) for a language, as faster-whisper's
        `transcribe(without_timestamps=True)` builds them; cached per language."""
        cached = self._prompts.get(language)
        if cached is None:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            tokenizer = Tokenizer(
                self._model.hf_tokenizer,
                self.multilingual,
                task="transcribe",
                language=language if self.multilingual else None,
            )
            prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
            suppress = list(get_suppressed_tokens(tokenizer, [-1]) or [])
            cached = self._prompts[language] = (prompt, suppress, tokenizer)
        return cached


__all__ = [
    "FRAMES_PER_SECOND",
    "FULL_WINDOW_FRAMES",
    "DecoderChoice",
    "WhisperWindow",
    "WindowDecode",
]
