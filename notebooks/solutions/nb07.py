"""Notebook 07 (capstone), exercises: the vectorised layer functions FCN-8s trains with.

Each has exactly the signature and results of the plain function of the same name in
minifcn/nn/ (conv.py, pool.py, conv_transpose.py, crop.py), so that
``minifcn.dispatch.use(...)`` can plug it into every layer of a network. No loop over
output pixels: the loops run over the kh*kw kernel offsets, each one strided copy.
"""

import numpy as np


def _padded(x, padding):
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def conv2d(x, weight, stride, padding):
    """x (N, C, H, W), weight (O, C, kh, kw) -> (y (N, O, out_h, out_w), col (N, K, P))."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    out_h = (h + 2 * padding - kh) // stride + 1
    out_w = (w + 2 * padding - kw) // stride + 1
    xp = _padded(x, padding)
    col = np.empty((n, c, kh, kw, out_h, out_w), dtype=x.dtype)
    for i in range(kh):  # im2col: one strided copy per kernel offset
        for j in range(kw):
            col[:, :, i, j] = xp[
                :, :, i : i + stride * out_h : stride, j : j + stride * out_w : stride
            ]
    col = col.reshape(n, c * kh * kw, out_h * out_w)
    y = weight.reshape(o, -1) @ col  # (O, K) @ (N, K, P) -> (N, O, P)
    return y.reshape(n, o, out_h, out_w), col


def conv2d_input_grad(dy, weight, h, w, stride, padding):
    """dy (N, O, out_h, out_w) -> dx (N, C, h, w): W^T dy, then col2im (overlaps add up)."""
    n, o, out_h, out_w = dy.shape
    _, c, kh, kw = weight.shape
    dcol = (weight.reshape(o, -1).T @ dy.reshape(n, o, -1)).reshape(n, c, kh, kw, out_h, out_w)
    dxp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i : i + stride * out_h : stride, j : j + stride * out_w : stride] += dcol[
                :, :, i, j
            ]
    return dxp[:, :, padding : padding + h, padding : padding + w]


def conv2d_weight_grad(col, dy):
    """col (N, K, P) from conv2d, dy (N, O, out_h, out_w) -> dW (O, K), summed over images."""
    n, o = dy.shape[:2]
    return np.tensordot(dy.reshape(n, o, -1), col, axes=([0, 2], [0, 2]))


def max_pool2d(x, k, s, p, out_h, out_w):
    """x (N, C, H, W) -> (y (N, C, out_h, out_w), arg: the winning offset i*k + j)."""
    n, c, h, w = x.shape
    canvas_h = max((out_h - 1) * s + k, h + p)
    canvas_w = max((out_w - 1) * s + k, w + p)
    img = np.full((n, c, canvas_h, canvas_w), -np.inf, dtype=x.dtype)
    img[:, :, p : p + h, p : p + w] = x  # outside the input counts as -inf
    y = np.full((n, c, out_h, out_w), -np.inf, dtype=x.dtype)
    arg = np.zeros((n, c, out_h, out_w), dtype=np.int32)
    for i in range(k):
        for j in range(k):
            window = img[:, :, i : i + s * out_h : s, j : j + s * out_w : s]
            better = window > y  # strictly: ties keep the first offset
            y = np.where(better, window, y)
            arg = np.where(better, i * k + j, arg)
    return y, arg


def max_pool2d_backward(dy, arg, x_shape, k, s, p):
    """dy (N, C, out_h, out_w) -> dx (N, C, H, W): each output's gradient to its winner."""
    n, c, h, w = x_shape
    out_h, out_w = dy.shape[2:]
    canvas_h = max((out_h - 1) * s + k, h + p)
    canvas_w = max((out_w - 1) * s + k, w + p)
    dimg = np.zeros((n, c, canvas_h, canvas_w), dtype=dy.dtype)
    for i in range(k):
        for j in range(k):
            dimg[:, :, i : i + s * out_h : s, j : j + s * out_w : s] += dy * (arg == i * k + j)
    return dimg[:, :, p : p + h, p : p + w]


def conv_transpose2d(x, weight, stride, padding):
    """x (N, I, H, W), weight (I, O, k, k) -> (y (N, O, out_h, out_w), x for the backward).

    The transposed convolution is the convolution's input gradient, with weight (I, O, k, k)
    read as a convolution from O channels to I."""
    k = weight.shape[2]
    h = (x.shape[2] - 1) * stride - 2 * padding + k
    w = (x.shape[3] - 1) * stride - 2 * padding + k
    return conv2d_input_grad(x, weight, h, w, stride, padding), x


def conv_transpose2d_backward(saved, dy, weight, stride, padding, weight_grad):
    """-> (dx (N, I, H, W) = conv2d(dy), dW (I, O, k, k) or None)."""
    x = saved
    dx, col = conv2d(dy, weight, stride, padding)
    dw = conv2d_weight_grad(col, x).reshape(weight.shape) if weight_grad else None
    return dx, dw


def crop2d(x, oy, ox, h, w):
    """x (N, C, H, W) -> the (h, w) window whose top-left corner is (oy, ox)."""
    return x[:, :, oy : oy + h, ox : ox + w]


def crop2d_backward(dy, x_shape, oy, ox):
    """dy (N, C, h, w) -> dx (N, C, H, W): dy inside the window, zeros elsewhere."""
    dx = np.zeros(x_shape, dtype=dy.dtype)
    dx[:, :, oy : oy + dy.shape[2], ox : ox + dy.shape[3]] = dy
    return dx
