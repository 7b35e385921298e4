"""Fuse: the elementwise sum that joins a skip branch to the main score map."""

from __future__ import annotations

from .coords import CoordMap
from .module import Module


class Fuse(Module):
    """``forward(a, b) -> a + b`` (same shape); ``backward(dy) -> (dy, dy)``.

    A sum sends its gradient unchanged to both summands.
    """

    def forward(self, a, b):
        if a.shape != b.shape:
            raise ValueError(f"Fuse: shapes must match, got {tuple(a.shape)} and {tuple(b.shape)}")
        return a + b

    def backward(self, dy):
        return dy, dy

    def coord_map(self) -> CoordMap:
        """Pointwise: output pixel = the same pixel of both summands (which must be aligned)."""
        return CoordMap()
