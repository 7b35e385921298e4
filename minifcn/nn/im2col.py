"""im2col and col2im: turning a convolution into one matrix multiply.

A convolution with a kh x kw kernel reads, for every output pixel, a
``C x kh x kw`` patch of the (padded) input. ``im2col`` copies all those patches
into one array ``col`` of shape (N, C, kh, kw, out_h, out_w). Reshaped to
(N, K, P) with K = C*kh*kw and P = out_h*out_w, each image's patches are the
columns of a (K, P) matrix, and the convolution is the weights, reshaped to
(O, K), times that matrix.

The copy loops over the kh*kw kernel offsets, never over output pixels: for a
fixed offset (i, j) the entries ``col[:, :, i, j]`` are one strided slice of the
padded input. ``col2im`` is the adjoint: the same loop, adding each slice back
(``+=``), which is what the backward pass of im2col needs.

This is the plain version, one layout and one loop. ``minifcn.accel`` has the
faster variants (another layout, reused buffers, whole-block copies, CUDA
kernels); the tests check that they compute the same arrays.
"""

from __future__ import annotations

from ..backend import get_array_module


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def pad2d(x, padding: int):
    """x (N, C, H, W) -> (N, C, H + 2p, W + 2p), zeros around the border."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out = xp.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype)
    out[:, :, padding : padding + h, padding : padding + w] = x
    return out


def im2col(x, kh: int, kw: int, stride: int, padding: int):
    """Gather every kh x kw patch of ``x``.

    Args:
        x: (N, C, H, W).
    Returns:
        col: (N, C, kh, kw, out_h, out_w), where ``col[n, c, i, j, y, x]`` is the
        padded input at row ``y*stride + i`` and column ``x*stride + j``.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out_h = conv_output_size(h, kh, stride, padding)
    out_w = conv_output_size(w, kw, stride, padding)
    img = pad2d(x, padding)
    col = xp.empty((n, c, kh, kw, out_h, out_w), dtype=x.dtype)
    for i in range(kh):
        rows = slice(i, i + stride * out_h, stride)  # the rows offset i reads: out_h of them
        for j in range(kw):
            cols = slice(j, j + stride * out_w, stride)
            col[:, :, i, j] = img[:, :, rows, cols]
    return col


def col2im(col, h: int, w: int, stride: int, padding: int):
    """The adjoint of ``im2col``: add every patch back where it came from.

    Args:
        col: (N, C, kh, kw, out_h, out_w).
        h, w: the spatial size of the (unpadded) image to rebuild.
    Returns:
        img: (N, C, h, w), where each input pixel holds the sum of all ``col``
        entries that were copied from it. Entries that came from the padding are
        dropped.
    """
    xp = get_array_module(col)
    n, c, kh, kw, out_h, out_w = col.shape
    # The padded image, large enough for every slice below even where the last
    # rows/columns were never read (when (h + 2p - k) is not a multiple of s).
    hp = max(h + 2 * padding, stride * (out_h - 1) + kh)
    wp = max(w + 2 * padding, stride * (out_w - 1) + kw)
    img = xp.zeros((n, c, hp, wp), dtype=col.dtype)
    for i in range(kh):
        rows = slice(i, i + stride * out_h, stride)
        for j in range(kw):
            cols = slice(j, j + stride * out_w, stride)
            img[:, :, rows, cols] += col[:, :, i, j]
    return img[:, :, padding : padding + h, padding : padding + w]
