"""A learnable tensor: its value and the gradient accumulated into it."""

from __future__ import annotations

from ..backend import get_array_module


class Parameter:
    """A learnable array.

    Attributes:
        data: the value, any shape (e.g. a conv weight, shape (out, in, kh, kw)).
        grad: same shape and dtype as ``data``. Backward passes ADD into it
            (as PyTorch does); ``Module.zero_grad()`` resets it.
        requires_grad: False freezes the parameter: backward skips its gradient
            and optimisers leave it unchanged.
    """

    def __init__(self, data, requires_grad: bool = True):
        self.data = data
        self.grad = get_array_module(data).zeros_like(data)
        self.requires_grad = requires_grad

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", frozen"
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype}{frozen})"
