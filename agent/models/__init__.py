"""Models layer: default-model registry, download, synthetic models, resolution and loaders.

Real weights are fetched once with `voice-agent models pull`; machines without a model hub
use `voice-agent models synth` (random weights in the exact formats the loaders read). Both
go through the same resolution (`resolve.resolve_models`) and loading (`loaders`) code.
"""

from __future__ import annotations


class ModelError(Exception):
    """A model is missing, unreadable or cannot be fetched; the message is for the user."""


__all__ = ["ModelError"]
