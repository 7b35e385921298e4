"""Flatten: (N, C, H, W) -> (N, C*H*W), the step a classifier takes before its FC head."""

from __future__ import annotations

from .module import Module


class Flatten(Module):
    """``forward(x (N, C, H, W)) -> (N, C*H*W)`` in C-major order (PyTorch's order:
    index c*H*W + y*W + x); ``backward`` reshapes back."""

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._shape)
