"""Which functions a layer runs: yours, the accelerated path's, or the plain ones.

A layer in ``minifcn/nn/`` that has a faster twin keeps its algorithm in plain
functions (``conv2d``, ``max_pool2d``, ...) and asks, on every forward,

    ops = ops_for(x, PLAIN)      # PLAIN: the layer's own plain functions
    y, cache = ops.conv2d(x, weight, stride, padding)

and keeps ``ops`` with its cache, so that backward runs the twin of the forward
that ran. ``ops_for`` answers, in this order:

1. the functions given to ``use(...)``, inside a ``with use(...)`` block: the
   course's capstone plugs a learner's own functions into FCN this way;
2. the accelerated path (``minifcn/accel``) for the array's device, which
   registers itself here with ``register_accelerated`` (switched off by
   ``MINIFCN_ACCEL=0``, on the GPU also by ``MINIFCN_CUDA_KERNELS=0``);
3. the plain functions the layer passed in.

The dispatch lives below both paths: ``nn`` never imports ``accel``, and
``accel`` only promises to implement ``LayerOps``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Protocol

import numpy as np

from .backend import accelerated, cuda_kernels_enabled, get_array_module


class LayerOps(Protocol):
    """The contract between the plain and the accelerated path: nine functions.

    Both paths take and return the same arrays; only the cached state a forward
    returns for its own backward (``col``, ``saved``, ``arg``) may differ in layout.
    """

    def conv2d(self, x, weight, stride: int, padding: int):
        """x (N, C, H, W), weight (O, C, kh, kw) -> (y (N, O, out_h, out_w), col)."""

    def conv2d_input_grad(self, dy, weight, h: int, w: int, stride: int, padding: int):
        """dy (N, O, out_h, out_w) -> dx (N, C, h, w)."""

    def conv2d_weight_grad(self, col, dy):
        """col (what conv2d returned), dy -> dW, reshapeable to (O, C, kh, kw)."""

    def conv_transpose2d(self, x, weight, stride: int, padding: int):
        """x (N, I, H, W), weight (I, O, k, k) -> (y (N, O, out_h, out_w), saved)."""

    def conv_transpose2d_backward(
        self, saved, dy, weight, stride: int, padding: int, weight_grad: bool
    ):
        """saved, dy (N, O, out_h, out_w) -> (dx (N, I, H, W), dW (I, O, k, k) or None)."""

    def max_pool2d(self, x, k: int, s: int, p: int, out_h: int, out_w: int):
        """x (N, C, H, W) -> (y (N, C, out_h, out_w), arg), arg for the backward."""

    def max_pool2d_backward(self, dy, arg, x_shape, k: int, s: int, p: int):
        """dy (N, C, out_h, out_w) -> dx (N, C, H, W)."""

    def softmax_xent(self, scores, labels, ignore_index: int, counted):
        """scores (N, C, H, W), labels (N, H, W) -> (pixel_loss (N, H, W), saved)."""

    def softmax_xent_backward(self, saved, labels, ignore_index: int, scale: float):
        """-> dscores (N, C, H, W) = (softmax - one_hot(label)) * scale, 0 where ignored."""


ACCELERATED_OPS = tuple(n for n in vars(LayerOps) if not n.startswith("_"))

# Each layer's functions, all-or-nothing: a forward and its backward must come from
# the same path (the backward reads the cache its forward made).
GROUPS = {
    "Conv2d": ("conv2d", "conv2d_input_grad", "conv2d_weight_grad"),
    "ConvTranspose2d": ("conv_transpose2d", "conv_transpose2d_backward"),
    "MaxPool2d": ("max_pool2d", "max_pool2d_backward"),
    "SoftmaxCrossEntropy": ("softmax_xent", "softmax_xent_backward"),
    "Crop": ("crop2d", "crop2d_backward"),  # plain only: nothing to accelerate
}

_accelerated: dict[str, Callable[[], object]] = {}
_overrides: list[SimpleNamespace] = []


def register_accelerated(device: str, load: Callable[[], object]) -> None:
    """Make ``load()`` (called on first use) the accelerated functions for ``device``
    ("cpu" for NumPy arrays, "gpu" for CuPy arrays)."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"register_accelerated: device must be 'cpu' or 'gpu', got {device!r}")
    _accelerated[device] = load


def accelerated_ops(device: str):
    """The registered accelerated functions for ``device`` (None if none are)."""
    load = _accelerated.get(device)
    return load() if load is not None else None


def ops_for(x, plain):
    """The functions a layer runs for input ``x``: ``use()``'s, accelerated, or ``plain``."""
    names = vars(plain)
    for ops in reversed(_overrides):
        if all(hasattr(ops, n) for n in names):
            return ops
    if not accelerated():
        return plain
    on_cpu = get_array_module(x) is np
    if not on_cpu and not cuda_kernels_enabled():
        return plain
    ops = accelerated_ops("cpu" if on_cpu else "gpu")
    if ops is not None and all(hasattr(ops, n) for n in names):
        return ops
    return plain


@contextlib.contextmanager
def use(**functions):
    """Inside the block, layers run these functions instead of their own.

    Give whole layers (see ``GROUPS``): ``use(conv2d=f, conv2d_input_grad=g,
    conv2d_weight_grad=h)`` makes every ``Conv2d`` run f, g and h, with the same
    arguments and results as the plain functions in ``minifcn/nn/conv.py``.
    Layers whose functions are not given run as before.
    """
    known = {n for group in GROUPS.values() for n in group}
    unknown = sorted(set(functions) - known)
    if unknown:
        raise TypeError(f"use(): unknown function name(s) {unknown}; known: {sorted(known)}")
    for layer, group in GROUPS.items():
        given = [n for n in group if n in functions]
        if given and len(given) < len(group):
            missing = [n for n in group if n not in functions]
            raise ValueError(
                f"use(): {layer} needs all of {list(group)} (a forward and its backward "
                f"together); missing {missing}"
            )
    not_callable = [n for n, f in functions.items() if not callable(f)]
    if not_callable:
        raise TypeError(f"use(): {not_callable} must be functions")
    _overrides.append(SimpleNamespace(**functions))
    try:
        yield
    finally:
        _overrides.pop()


def in_use() -> tuple[str, ...]:
    """The layers whose functions a ``use()`` block currently replaces."""
    given = set().union(*(vars(o) for o in _overrides)) if _overrides else set()
    return tuple(layer for layer, group in GROUPS.items() if set(group) <= given)
