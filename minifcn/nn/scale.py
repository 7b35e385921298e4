"""Scale: multiply by a fixed constant (FCN-8s at-once scales pool4 and pool3)."""

from __future__ import annotations

from .coords import CoordMap
from .module import Module


class Scale(Module):
    """``forward(x) -> factor * x``; ``backward(dy) -> factor * dy``. Not learnable."""

    def __init__(self, factor: float):
        self.factor = float(factor)

    def forward(self, x):
        return x * x.dtype.type(self.factor)

    def backward(self, dy):
        return dy * dy.dtype.type(self.factor)

    def coord_map(self) -> CoordMap:
        """Pointwise: every output pixel is the input pixel at the same place."""
        return CoordMap()

    def extra_repr(self) -> str:
        return f"factor={self.factor}"
