"""Inverted dropout."""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from ..backend import get_array_module
from ..dispatch import ops_for
from .coords import CoordMap
from .module import Module


def dropout(x, keep, scale: float):
    """y = x * mask, where mask = keep * scale in x's dtype; and the mask for backward.

    Args:
        x: any shape; keep: bool NumPy array of x's shape (True: the element stays);
        scale: 1 / (1 - p).
    """
    xp = get_array_module(x)
    mask = xp.asarray(keep).astype(x.dtype) * x.dtype.type(scale)
    return x * mask, mask


def dropout_backward(dy, mask):
    """dx = dy * mask."""
    return dy * mask


# The plain functions of a Dropout (on the GPU, minifcn.accel has one kernel each way).
PLAIN = SimpleNamespace(dropout=dropout, dropout_backward=dropout_backward)


class RowsOfBatch:
    """A dropout layer's generator seen from a part of a batch run apart (the batch split's
    halves, a rank's shard): each draw is the mask of the whole batch of ``total`` images,
    from the generator itself, and returns rows ``offset`` .. ``offset + n`` of it (n: the
    images the layer sees). Every part then gets the rows the whole batch would, and the
    generator moves on as it would for the whole batch. ``bit_generator`` is the
    generator's own (what checkpoints save)."""

    def __init__(self, rng, total: int, offset: int):
        self.rng, self.total, self.offset = rng, total, offset

    @property
    def bit_generator(self):
        return self.rng.bit_generator

    def random(self, shape, dtype=np.float64):
        full = self.rng.random((self.total, *shape[1:]), dtype=dtype)
        return full[self.offset : self.offset + shape[0]]


class DropoutCache(NamedTuple):
    ops: object  # the functions that ran forward
    mask: object  # kept/(1 - p) per element, or None in eval mode (the identity)


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
        self._cache = None

    def forward(self, x):
        """x: any shape -> same shape and dtype."""
        if not self.training or self.p == 0.0:
            self._cache = DropoutCache(None, None)
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        ops = ops_for(x, PLAIN)
        y, mask = ops.dropout(x, keep, 1.0 / (1.0 - self.p))
        self._cache = DropoutCache(ops, mask)
        return y

    def backward(self, dy):
        ops, mask = self.cached()
        return dy if mask is None else ops.dropout_backward(dy, mask)

    def coord_map(self) -> CoordMap:
        """Pointwise: every output pixel is the input pixel at the same place."""
        return CoordMap()

    def extra_repr(self) -> str:
        return f"p={self.p}"
