"""Fully connected layer: the layer FCN turns into a convolution."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .init import as_generator, kaiming_normal
from .module import Module
from .parameter import Parameter


class LinearCache(NamedTuple):
    x: object  # (N, in_features), for the weight gradient


class Linear(Module):
    """y = x W^T + b, PyTorch's ``nn.Linear``.

    Parameters:
        weight: (out_features, in_features), He-normal init.
        bias: (out_features,), zeros.

    ``forward(x (N, in_features)) -> (N, out_features)``.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, rng=None, dtype=np.float32
    ):
        self.in_features, self.out_features = in_features, out_features
        w = kaiming_normal((out_features, in_features), in_features, as_generator(rng), dtype)
        self.weight = Parameter(w)
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None
        self._cache = None

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Linear: expected input of shape (N, {self.in_features}), got {tuple(x.shape)}"
            )
        self._cache = LinearCache(x)
        y = x @ self.weight.data.T
        return y + self.bias.data if self.bias is not None else y

    def backward(self, dy):
        """dy (N, out_features) -> dx (N, in_features); adds into weight.grad and bias.grad."""
        x = self.cached().x
        if self.weight.requires_grad:
            self.weight.grad += dy.T @ x
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += dy.sum(axis=0)
        return dy @ self.weight.data

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
