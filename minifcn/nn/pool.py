"""Max pooling with PyTorch's output-size rule, including ceil mode."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import NamedTuple

from ..backend import get_array_module
from ..dispatch import ops_for
from .checks import check_float, check_int_at_least, check_nchw
from .coords import CoordMap
from .module import Module


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's rule: floor (or ceil) of (size + 2p - k) / s, plus one.

    In ceil mode the last window may hang over the bottom/right edge, but it
    must start inside the input or the left padding; otherwise it is dropped.
    FCN pools 2x2/2 in ceil mode, so an odd size 7 becomes 4, not 3.
    """
    span = size + 2 * padding - kernel
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _canvas(x_shape, out_h: int, out_w: int, k: int, s: int, p: int):
    """(N, C, Hc, Wc): a canvas holding every window, the input at offset (p, p)."""
    n, c, h, w = x_shape
    return n, c, max((out_h - 1) * s + k, h + p), max((out_w - 1) * s + k, w + p)


def max_pool2d(x, k: int, s: int, p: int, out_h: int, out_w: int):
    """The maximum over every k x k window, a loop over the k*k kernel offsets.

    Args:
        x: (N, C, H, W).
    Returns:
        y: (N, C, out_h, out_w).
        arg: (N, C, out_h, out_w) int, the winning offset i*k + j of each window
            (the first in row-major order when several are equal).
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    img = xp.full(_canvas(x.shape, out_h, out_w, k, s, p), -xp.inf, dtype=x.dtype)
    img[:, :, p : p + h, p : p + w] = x  # positions outside the input count as -inf
    y = xp.full((n, c, out_h, out_w), -xp.inf, dtype=x.dtype)
    arg = xp.zeros((n, c, out_h, out_w), dtype=xp.int32)
    for i in range(k):
        for j in range(k):
            window = img[:, :, i : i + s * out_h : s, j : j + s * out_w : s]
            better = window > y
            y = xp.where(better, window, y)
            arg = xp.where(better, i * k + j, arg)
    return y, arg


def max_pool2d_backward(dy, arg, x_shape, k: int, s: int, p: int):
    """dy (N, C, out_h, out_w) -> dx (N, C, H, W): each output's gradient goes to the
    input that won its window; inputs in several windows add up what they won."""
    xp = get_array_module(dy)
    n, c, h, w = x_shape
    out_h, out_w = dy.shape[2:]
    dimg = xp.zeros(_canvas(x_shape, out_h, out_w, k, s, p), dtype=dy.dtype)
    for i in range(k):
        for j in range(k):
            dimg[:, :, i : i + s * out_h : s, j : j + s * out_w : s] += dy * (arg == i * k + j)
    return dimg[:, :, p : p + h, p : p + w]


# The plain functions of a MaxPool2d (minifcn.dispatch chooses between them and their twins).
PLAIN = SimpleNamespace(max_pool2d=max_pool2d, max_pool2d_backward=max_pool2d_backward)


class PoolCache(NamedTuple):
    """What ``MaxPool2d.forward`` keeps for ``backward``."""

    ops: object  # the functions that ran forward (PLAIN or an accelerated module)
    x_shape: tuple  # (N, C, H, W)
    arg: object  # (N, C, out_h, out_w), the winning offset of each window


class MaxPool2d(Module):
    """``forward(x (N, C, H, W)) -> (N, C, out_h, out_w)``, the max over each window.

    Windows loop over the kernel offsets (kernel_size**2 strided slices), never
    over output pixels. Positions outside the input count as -inf. Ties go to the
    first offset in row-major order; backward sends each output's gradient to
    the one input that won.
    """

    def __init__(
        self, kernel_size: int, stride: int | None = None, padding: int = 0, ceil_mode: bool = False
    ):
        self.kernel_size = check_int_at_least(kernel_size, 1, "kernel_size", "MaxPool2d")
        stride = kernel_size if stride is None else stride
        self.stride = check_int_at_least(stride, 1, "stride", "MaxPool2d")
        self.padding = check_int_at_least(padding, 0, "padding", "MaxPool2d")
        self.ceil_mode = ceil_mode
        if padding * 2 > kernel_size:
            raise ValueError(
                f"MaxPool2d: padding ({padding}) must be at most half of "
                f"kernel_size ({kernel_size})"
            )
        self._cache = None

    def output_size(self, size: int) -> int:
        return pool_output_size(size, self.kernel_size, self.stride, self.padding, self.ceil_mode)

    def coord_map(self) -> CoordMap:
        """Output pixel -> the centre of its input window (``CoordMap.window``)."""
        return CoordMap.window(self.kernel_size, self.stride, self.padding)

    def forward(self, x):
        check_nchw(x, "MaxPool2d")
        check_float(x, "MaxPool2d")
        k, s, p = self.kernel_size, self.stride, self.padding
        out_h, out_w = self.output_size(x.shape[2]), self.output_size(x.shape[3])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"MaxPool2d: kernel {k} is larger than the padded input {x.shape}")
        ops = ops_for(x, PLAIN)
        y, arg = ops.max_pool2d(x, k, s, p, out_h, out_w)
        self._cache = PoolCache(ops, x.shape, arg)
        return y

    def backward(self, dy):
        """dy (N, C, out_h, out_w) -> dx (N, C, H, W)."""
        ops, x_shape, arg = self.cached()
        k, s, p = self.kernel_size, self.stride, self.padding
        return ops.max_pool2d_backward(dy, arg, x_shape, k, s, p)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"ceil_mode={self.ceil_mode}"
        )
