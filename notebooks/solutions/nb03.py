"""Notebook 03, exercises: the bilinear kernel and the transposed-convolution painting loop."""

import numpy as np


def bilinear(k):
    """The (k, k) bilinear upsampling kernel for factor f = ceil(k / 2)."""
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    profile = 1 - np.abs(np.arange(k) - centre) / factor
    return np.outer(profile, profile)


def conv_transpose(x, weight, stride, padding):
    """x (N, I, H, W), weight (I, O, k, k) -> y (N, O, (H-1)*stride - 2*padding + k, ...)."""
    n, _, h, w = x.shape
    _, o, k, _ = weight.shape
    full = np.zeros((n, o, (h - 1) * stride + k, (w - 1) * stride + k))
    for r in range(h):
        for s in range(w):
            # input pixel (r, s) paints its value times the kernel, for every output channel
            stamp = np.tensordot(x[:, :, r, s], weight, axes=([1], [0]))  # (N, O, k, k)
            full[:, :, r * stride : r * stride + k, s * stride : s * stride + k] += stamp
    return full[:, :, padding : full.shape[2] - padding, padding : full.shape[3] - padding]
