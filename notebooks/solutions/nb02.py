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


def fc_as_conv(weight, bias, in_channels, k, order):
    """A fully connected layer on a flattened (in_channels, k, k) map, as a k x k convolution.

    weight (F, k*k*C) in the (out, in) layout of minifcn's Linear, bias (F,) ->
    (conv_weight (F, C, k, k), conv_bias (F,)). ``order`` is how the map was flattened:
    "chw" (minifcn's Flatten, index c*k*k + i*k + j) or "hwc" (VGG16's fc6 as stored
    in the npz, index (i*k + j)*C + c).
    """
    f = weight.shape[0]
    if order == "chw":
        conv_weight = weight.reshape(f, in_channels, k, k)
    elif order == "hwc":
        conv_weight = weight.reshape(f, k, k, in_channels).transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"order must be 'chw' or 'hwc', got {order!r}")
    return conv_weight.copy(), bias.copy()
