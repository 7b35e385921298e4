"""Rectified linear unit."""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

from ..dispatch import ops_for
from .coords import CoordMap
from .module import Module


def relu(x):
    """y = max(x, 0), written x * (x > 0); and the mask x > 0 (bool) for backward."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dy, mask):
    """dx = dy where x > 0, else 0."""
    return dy * mask


# The plain functions of a ReLU (on the GPU, minifcn.accel has one kernel each way).
PLAIN = SimpleNamespace(relu=relu, relu_backward=relu_backward)


class ReLUCache(NamedTuple):
    ops: object  # the functions that ran forward
    mask: object  # x > 0, x's shape (bool on the plain path)


class ReLU(Module):
    """``forward(x) -> max(x, 0)``, any shape; ``backward(dy) -> dy`` where x > 0, else 0.

    Keeps the mask ``x > 0`` (an array of x's shape) for backward.
    """

    def __init__(self):
        self._cache = None

    def forward(self, x):
        ops = ops_for(x, PLAIN)
        y, mask = ops.relu(x)
        self._cache = ReLUCache(ops, mask)
        return y

    def backward(self, dy):
        ops, mask = self.cached()
        return ops.relu_backward(dy, mask)

    def coord_map(self) -> CoordMap:
        """Pointwise: every output pixel is the input pixel at the same place."""
        return CoordMap()
