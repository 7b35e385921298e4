"""Rectified linear unit."""

from __future__ import annotations

from .module import Module


class ReLU(Module):
    """``forward(x) -> max(x, 0)``, any shape; backward passes dy where x > 0."""

    def forward(self, x):
        self._mask = x > 0
        return x * self._mask

    def backward(self, dy):
        return dy * self._mask
