"""Max pooling with PyTorch's output-size rule, including ceil mode."""

from __future__ import annotations

import math

from ..backend import get_array_module
from .checks import check_float, check_nchw, check_positive_int
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


class MaxPool2d(Module):
    """``forward(x (N, C, H, W)) -> (N, C, out_h, out_w)``, the max over each window.

    Windows loop over the kernel offsets (kernel_size**2 strided slices), never
    over output pixels. Positions outside the input count as -inf. Ties go to the
    first offset in row-major order; backward sends each output's gradient to
    the one input that won.

    Fast path (FCN's 2x2/2 and any window with stride == kernel_size, padding 0):
    the windows tile the image, so the -inf-padded image *is* the windows,
    viewed as (N, C, out_h, k, out_w, k) without a copy; backward builds the
    gradient in that same view with one broadcast comparison. Set
    ``fast = False`` on a layer to use the general loop (the tests compare them).
    """

    fast: bool = True

    def __init__(
        self, kernel_size: int, stride: int | None = None, padding: int = 0, ceil_mode: bool = False
    ):
        self.kernel_size = check_positive_int(kernel_size, "kernel_size", "MaxPool2d")
        stride = kernel_size if stride is None else stride
        self.stride = check_positive_int(stride, "stride", "MaxPool2d")
        self.padding = check_positive_int(padding, "padding", "MaxPool2d", minimum=0)
        self.ceil_mode = ceil_mode
        if padding * 2 > kernel_size:
            raise ValueError(
                f"MaxPool2d: padding ({padding}) must be at most half of "
                f"kernel_size ({kernel_size})"
            )
        self._cache = None

    def output_size(self, size: int) -> int:
        return pool_output_size(size, self.kernel_size, self.stride, self.padding, self.ceil_mode)

    def forward(self, x):
        check_nchw(x, "MaxPool2d")
        check_float(x, "MaxPool2d")
        xp = get_array_module(x)
        n, c, h, w = x.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        out_h, out_w = self.output_size(h), self.output_size(w)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"MaxPool2d: kernel {k} is larger than the padded input {x.shape}")
        if self.fast and s == k and p == 0:
            return self._forward_tiled(x, out_h, out_w)
        # A -inf canvas big enough for every window, the input in its interior.
        hp, wp = (out_h - 1) * s + k, (out_w - 1) * s + k
        img = xp.full((n, c, max(hp, h + p), max(wp, w + p)), -xp.inf, dtype=x.dtype)
        img[:, :, p : p + h, p : p + w] = x
        y = None
        arg = xp.zeros((n, c, out_h, out_w), dtype=xp.int8 if k * k < 128 else xp.int32)
        for i in range(k):
            for j in range(k):
                window = img[:, :, i : i + s * out_h : s, j : j + s * out_w : s]
                if y is None:
                    y = window.copy()
                    continue
                better = window > y
                y = xp.where(better, window, y)
                arg[better] = i * k + j
        self._cache = (x.shape, arg, img.shape)
        return y

    def _forward_tiled(self, x, out_h: int, out_w: int):
        """Non-overlapping windows: x (N, C, H, W) -> y (N, C, out_h, out_w).

        Offset (i, j) of every window is the strided view ``win[:, :, :, i, :, j]``,
        so the maximum is k*k - 1 elementwise ``maximum`` calls. The winner kept
        for backward (``arg``, row-major offset i*k + j, int8) is the FIRST offset
        equal to the maximum, as in the loop: arg counts the offsets passed before
        the first match.
        """
        xp = get_array_module(x)
        n, c, h, w = x.shape
        k = self.kernel_size
        th, tw = out_h * k, out_w * k  # the tiled area
        if (h, w) == (th, tw):
            img = x
        else:  # ceil mode's overhang is -inf; floor mode's leftover rows/columns are cut
            img = xp.full((n, c, th, tw), -xp.inf, dtype=x.dtype)
            img[:, :, : min(h, th), : min(w, tw)] = x[:, :, :th, :tw]
        win = img.reshape(n, c, out_h, k, out_w, k)
        offsets = [win[:, :, :, i, :, j] for i in range(k) for j in range(k)]
        y = offsets[0].copy()
        for view in offsets[1:]:
            xp.maximum(y, view, out=y)
        arg = xp.zeros(y.shape, dtype=xp.int8 if k * k < 128 else xp.int32)
        found = offsets[0] == y
        for view in offsets[1:]:
            arg += ~found  # one more offset passed without finding the maximum
            found |= view == y
        self._cache = (x.shape, arg, "tiled")
        return y

    def backward(self, dy):
        """dy (N, C, out_h, out_w) -> dx (N, C, H, W)."""
        (n, c, h, w), arg, canvas = self._cache
        if canvas == "tiled":
            return self._backward_tiled(dy)
        xp = get_array_module(dy)
        k, s, p = self.kernel_size, self.stride, self.padding
        out_h, out_w = dy.shape[2:]
        dimg = xp.zeros((n, c) + canvas[2:], dtype=dy.dtype)
        for i in range(k):
            for j in range(k):
                won = arg == i * k + j
                dimg[:, :, i : i + s * out_h : s, j : j + s * out_w : s] += dy * won
        return dimg[:, :, p : p + h, p : p + w]

    def _backward_tiled(self, dy):
        """dy (N, C, out_h, out_w) -> dx (N, C, H, W) for non-overlapping windows.

        Every pixel of the tiled area belongs to exactly one window, so each
        offset's strided view is written once: dy where that offset won, else 0.
        """
        (n, c, h, w), arg, _ = self._cache
        xp = get_array_module(dy)
        k = self.kernel_size
        out_h, out_w = dy.shape[2:]
        th, tw = out_h * k, out_w * k
        dimg = xp.empty((n, c, th, tw), dtype=dy.dtype)
        win = dimg.reshape(n, c, out_h, k, out_w, k)
        for i in range(k):
            for j in range(k):
                xp.multiply(dy, arg == i * k + j, out=win[:, :, :, i, :, j])
        if h <= th and w <= tw:
            return dimg[:, :, :h, :w]  # ceil mode: drop the overhang
        dx = xp.zeros((n, c, h, w), dtype=dy.dtype)  # floor mode: leftover pixels get 0
        dx[:, :, : min(h, th), : min(w, tw)] = dimg[:, :, :h, :w]
        return dx

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"ceil_mode={self.ceil_mode}"
        )
