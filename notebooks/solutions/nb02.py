"""Notebook 02, exercise: the backward pass of a max pool in ceil mode."""

import math

import numpy as np


def maxpool_backward(dy, x, kernel_size, stride):
    """dy (N, C, out_h, out_w), the input x (N, C, H, W) -> dx (N, C, H, W).

    Ceil mode, no padding: the last window may hang over the bottom or right edge
    (it covers only the pixels that exist). Each output's gradient goes to the
    input pixel that was the maximum of its window.
    """
    n, c, h, w = x.shape
    out_h, out_w = dy.shape[2:]
    assert out_h == math.ceil((h - kernel_size) / stride) + 1
    dx = np.zeros_like(x)
    for r in range(out_h):
        for s in range(out_w):
            top, left = r * stride, s * stride
            window = x[:, :, top : top + kernel_size, left : left + kernel_size]  # may be cut short
            flat = window.reshape(n, c, -1)
            winner = flat.argmax(axis=2)  # first maximum in row-major order, as the library
            wi, wj = np.unravel_index(winner, window.shape[2:])
            for a in range(n):
                for b in range(c):
                    dx[a, b, top + wi[a, b], left + wj[a, b]] += dy[a, b, r, s]
    return dx
