"""Notebook 01, exercises 1 and 2: a convolution's forward and backward pass, with loops."""

import numpy as np


def conv_forward(x, weight, bias, stride, padding):
    """x (N, C, H, W), weight (O, C, kh, kw), bias (O,) -> y (N, O, out_h, out_w)."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h = (h + 2 * padding - kh) // stride + 1
    out_w = (w + 2 * padding - kw) // stride + 1
    y = np.zeros((n, o, out_h, out_w))
    for r in range(out_h):
        for s in range(out_w):
            patch = xpad[:, :, r * stride : r * stride + kh, s * stride : s * stride + kw]
            # (N, C, kh, kw) against (O, C, kh, kw): sum over C, kh, kw
            y[:, :, r, s] = np.tensordot(patch, weight, axes=([1, 2, 3], [1, 2, 3])) + bias
    return y


def conv_backward(dy, x, weight, stride, padding):
    """dy (N, O, out_h, out_w) -> (dx like x, dw like weight, db (O,))."""
    _, _, h, w = x.shape
    _, _, kh, kw = weight.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(weight)
    out_h, out_w = dy.shape[2:]
    for r in range(out_h):
        for s in range(out_w):
            rows = slice(r * stride, r * stride + kh)
            cols = slice(s * stride, s * stride + kw)
            g = dy[:, :, r, s]  # (N, O)
            # y[n, o, r, s] used patch[n] with weight[o]: each gets the other times g
            dw += np.tensordot(g, xpad[:, :, rows, cols], axes=([0], [0]))
            dxpad[:, :, rows, cols] += np.tensordot(g, weight, axes=([1], [0]))
    db = dy.sum(axis=(0, 2, 3))
    dx = dxpad[:, :, padding : padding + h, padding : padding + w]
    return dx, dw, db
