"""Plain, obviously-correct loop versions of the convolutions, for teaching and tests.

These loop over output pixels and are far too slow for training. They exist so
a reader can see what a convolution computes before reading the im2col version
in ``conv.py``, and so the tests can compare the two.
"""

from __future__ import annotations

import numpy as np


def conv2d_naive(x, weight, bias=None, stride: int = 1, padding: int = 0):
    """Direct convolution (cross-correlation, as in every deep-learning library).

    Args:
        x: (N, C, H, W) NumPy array.
        weight: (O, C, kh, kw).
        bias: (O,) or None.
    Returns:
        y: (N, O, out_h, out_w) with ``y[n, o, r, s] = bias[o] +
        sum_{c,i,j} weight[o, c, i, j] * xpad[n, c, r*stride + i, s*stride + j]``.
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h = (h + 2 * padding - kh) // stride + 1
    out_w = (w + 2 * padding - kw) // stride + 1
    y = np.zeros((n, o, out_h, out_w), dtype=x.dtype)
    for r in range(out_h):
        for s in range(out_w):
            patch = xpad[:, :, r * stride : r * stride + kh, s * stride : s * stride + kw]
            # (N, C, kh, kw) x (O, C, kh, kw) -> (N, O)
            y[:, :, r, s] = np.tensordot(patch, weight, axes=([1, 2, 3], [1, 2, 3]))
    if bias is not None:
        y += bias.reshape(1, o, 1, 1)
    return y


def conv_transpose2d_naive(x, weight, stride: int = 1, padding: int = 0):
    """Direct transposed convolution: every input pixel paints a weighted kernel.

    Args:
        x: (N, I, H, W).
        weight: (I, O, kh, kw), PyTorch's ConvTranspose2d layout.
    Returns:
        y: (N, O, (H-1)*stride - 2*padding + kh, (W-1)*stride - 2*padding + kw).
    """
    n, cin, h, w = x.shape
    _, o, kh, kw = weight.shape
    full = np.zeros((n, o, (h - 1) * stride + kh, (w - 1) * stride + kw), dtype=x.dtype)
    for r in range(h):
        for s in range(w):
            # (N, I) x (I, O, kh, kw) -> (N, O, kh, kw)
            stamp = np.tensordot(x[:, :, r, s], weight, axes=([1], [0]))
            full[:, :, r * stride : r * stride + kh, s * stride : s * stride + kw] += stamp
    hh, ww = full.shape[2] - 2 * padding, full.shape[3] - 2 * padding
    return full[:, :, padding : padding + hh, padding : padding + ww]


def pool_window_starts(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool):
    """Where the pooling windows along one axis start, in padded coordinates, one by one.

    A window is kept when it fits inside the padded input. In ceil mode one more
    window may hang over the far edge, if the last fitting window left part of
    the input uncovered and the new window starts inside the input or the left
    padding (never in the right padding). This is the rule PyTorch documents,
    walked window by window; ``pool.pool_output_size`` is its closed form.
    """
    starts, t = [], 0
    end = size + 2 * padding
    while t + kernel <= end or (ceil_mode and t - stride + kernel < end and t < size + padding):
        starts.append(t)
        if t + kernel > end:  # the one window allowed to hang over
            break
        t += stride
    return starts


def max_pool2d_naive(x, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False):
    """Max pooling by a loop over output pixels; positions outside the input are skipped.

    Args:
        x: (N, C, H, W) NumPy array.
    Returns:
        y: (N, C, out_h, out_w), out_* = len(pool_window_starts(...)).
    """
    n, c, h, w = x.shape
    rows = pool_window_starts(h, kernel, stride, padding, ceil_mode)
    cols = pool_window_starts(w, kernel, stride, padding, ceil_mode)
    y = np.empty((n, c, len(rows), len(cols)), dtype=x.dtype)
    for r, t in enumerate(rows):
        for s, u in enumerate(cols):
            top, left = max(t - padding, 0), max(u - padding, 0)
            bottom, right = min(t - padding + kernel, h), min(u - padding + kernel, w)
            y[:, :, r, s] = x[:, :, top:bottom, left:right].max(axis=(2, 3))
    return y
