"""Max pooling over non-overlapping windows (stride == kernel, no padding), NumPy or CuPy.

FCN pools 2x2/2. When the windows tile the image, the -inf-padded image *is*
the windows, viewed as (N, C, out_h, k, out_w, k) without a copy: the maximum
is k*k - 1 elementwise ``maximum`` calls on strided views, and the backward
writes each offset's view once. Other windows use the plain loop of
``minifcn/nn/pool.py``. ``arg`` means what it means there (the first winning
offset i*k + j), so either backward can follow either forward.
"""

from __future__ import annotations

from ..backend import get_array_module
from ..nn import pool as plain


def arg_dtype(xp, k: int):
    """The dtype of the winning offsets of k x k windows: int8 while they fit."""
    return xp.int8 if k * k < 128 else xp.int32


def max_pool2d(x, k: int, s: int, p: int, out_h: int, out_w: int):
    """x (N, C, H, W) -> y (N, C, out_h, out_w), arg (the winning offsets, int8)."""
    if s != k or p != 0:
        return plain.max_pool2d(x, k, s, p, out_h, out_w)
    xp = get_array_module(x)
    n, c, h, w = x.shape
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
    # arg counts the offsets passed before the first one equal to the maximum
    arg = xp.zeros(y.shape, dtype=arg_dtype(xp, k))
    found = offsets[0] == y
    for view in offsets[1:]:
        arg += ~found
        found |= view == y
    return y, arg


def max_pool2d_backward(dy, arg, x_shape, k: int, s: int, p: int):
    """dy (N, C, out_h, out_w) -> dx (N, C, H, W)."""
    if s != k or p != 0:
        return plain.max_pool2d_backward(dy, arg, x_shape, k, s, p)
    xp = get_array_module(dy)
    n, c, h, w = x_shape
    out_h, out_w = dy.shape[2:]
    th, tw = out_h * k, out_w * k
    dimg = xp.empty((n, c, th, tw), dtype=dy.dtype)
    win = dimg.reshape(n, c, out_h, k, out_w, k)
    for i in range(k):  # every pixel of the tiled area is in exactly one window
        for j in range(k):
            xp.multiply(dy, arg == i * k + j, out=win[:, :, :, i, :, j])
    if h <= th and w <= tw:
        return dimg[:, :, :h, :w]  # ceil mode: drop the overhang
    dx = xp.zeros((n, c, h, w), dtype=dy.dtype)  # floor mode: leftover pixels get 0
    dx[:, :, : min(h, th), : min(w, tw)] = dimg[:, :, :h, :w]
    return dx
