"""Rectified linear unit."""

from __future__ import annotations

from typing import NamedTuple

from .coords import CoordMap
from .module import Module


class ReLUCache(NamedTuple):
    mask: object  # x > 0, bool, x's shape


class ReLU(Module):
    """``forward(x) -> max(x, 0)``, any shape; ``backward(dy) -> dy`` where x > 0, else 0.

    Keeps the mask ``x > 0`` (a bool array of x's shape) for backward.
    """

    def __init__(self):
        self._cache = None

    def forward(self, x):
        mask = x > 0
        self._cache = ReLUCache(mask)
        return x * mask

    def backward(self, dy):
        return dy * self.cached().mask

    def coord_map(self) -> CoordMap:
        """Pointwise: every output pixel is the input pixel at the same place."""
        return CoordMap()
