"""Smart Turn v3.2: the probability that the user has finished their turn, from the sound of
the last 8 s of their speech (prosody, not words).

The model is a Whisper-tiny encoder with a linear head, as ONNX (BSD-2-Clause, published
by Daily as `pipecat-ai/smart-turn-v3`; fetched as data from the `pipecat-ai` wheel, see
agent/models/registry.py). Its input is the last <= 8 s of 16 kHz mono audio, zero-padded at
the front and normalised to zero mean and unit variance, as Whisper log-mel features
(80 x 800); its output, P(turn complete). faster-whisper's `FeatureExtractor` computes the
same features as the transformers extractor the model was trained with (within 2e-7).

`probability` blocks for tens of milliseconds (53-64 ms on one core of a 2-core machine
here): call it in a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio import STT_RATE, Int16Array, int16_to_float
from agent.models import ModelError

log = logging.getLogger(__name__)

WINDOW_S = 8
WINDOW_SAMPLES = WINDOW_S * STT_RATE
NORMALISATION_EPS = 1e-7
INPUT_NAME = "input_features"


class SmartTurn:
    """One ONNX session shared by every session of the process (onnxruntime sessions are
    thread-safe); a lock keeps calls one at a time so each has its core to itself."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        import onnxruntime
        from faster_whisper.feature_extractor import FeatureExtractor

        self.path = path
        self._features = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(
                f"cannot load the Smart Turn model {path} (truncated or not ONNX?): {exc}"
            ) from exc
        names = [i.name for i in self._session.get_inputs()]
        if names != [INPUT_NAME]:
            raise ModelError(f"{path} is not a Smart Turn v3 model (inputs {names})")
        self._lock = threading.Lock()
        self.calls = 0
        self.seconds = 0.0
        """Inference calls so far and the time they took (features included)."""

    def features(self, audio: Int16Array) -> np.ndarray[Any, np.dtype[np.float32]]:
        """(80, 800) log-mel features of the last 8 s of `audio`, zero-padded at the front."""
        samples = int16_to_float(audio[-WINDOW_SAMPLES:])
        padded = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        padded[WINDOW_SAMPLES - samples.size :] = samples
        normalised = (padded - padded.mean()) / np.sqrt(padded.var() + NORMALISATION_EPS)
        features: np.ndarray[Any, np.dtype[np.float32]] = self._features(normalised, padding=0)
        return features[:, :800].astype(np.float32, copy=False)

    def probability(self, audio: Int16Array) -> float:
        """P(the turn is complete) for an utterance ending now. Blocking."""
        with self._lock:
            started = time.perf_counter()
            features = self.features(audio)[np.newaxis]
            (logits,) = self._session.run(None, {INPUT_NAME: features})
            self.calls += 1
            self.seconds += time.perf_counter() - started
        return float(np.asarray(logits).reshape(-1)[0])


def load_smart_turn(path: Path) -> SmartTurn:
    if not path.is_file() or path.stat().st_size == 0:
        raise ModelError(f"Smart Turn model not found (or empty): {path}")
    started = time.perf_counter()
    model = SmartTurn(path)
    model.probability(np.zeros(STT_RATE // 2, dtype=np.int16))  # warm the session up
    log.info("loaded Smart Turn %s in %.2f s", path, time.perf_counter() - started)
    return model
