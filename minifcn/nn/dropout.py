"""Inverted dropout."""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from .module import Module


class Dropout(Module):
    """Zero each element with probability ``p`` (the DROP probability) in training.

    Survivors are scaled by 1 / (1 - p) so the expected value is unchanged and
    evaluation needs no rescaling: in eval mode the layer is the identity.

    The mask comes from the layer's own NumPy generator ``rng`` (also for CuPy
    inputs, where it is copied to the GPU), so a seed fixes it on every device
    and its state can be saved with a checkpoint for an exact resume.
    """

    def __init__(self, p: float = 0.5, rng=None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._mask = None

    def forward(self, x):
        """x: any shape -> same shape and dtype."""
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        xp = get_array_module(x)
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        self._mask = xp.asarray(keep).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, dy):
        return dy if self._mask is None else dy * self._mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
