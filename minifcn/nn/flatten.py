"""Flatten: (N, C, H, W) -> (N, C*H*W), the step a classifier takes before its FC head."""

from __future__ import annotations

from typing import NamedTuple

from .module import Module


class FlattenCache(NamedTuple):
    x_shape: tuple  # (N, C, H, W) of the input


class Flatten(Module):
    """``forward(x (N, C, H, W)) -> (N, C*H*W)`` in C-major order (PyTorch's order:
    index c*H*W + y*W + x); ``backward`` reshapes back."""

    def __init__(self):
        self._cache = None

    def forward(self, x):
        self._cache = FlattenCache(tuple(x.shape))
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self.cached().x_shape)
