"""im2col and col2im: turning a convolution into one matrix multiply.

A convolution with a kh x kw kernel reads, for every output pixel, a
``C x kh x kw`` patch of the (padded) input. ``im2col`` copies all those patches
into one array ``col`` of shape (N, C, kh, kw, out_h, out_w); the convolution is
then a single matrix product of the weights, reshaped to (O, C*kh*kw), with
``col`` reshaped to (N, C*kh*kw, out_h*out_w).

The copy loops over the kh*kw kernel offsets, never over output pixels: for a
fixed offset (i, j) the entries ``col[:, :, i, j]`` are one strided slice of the
input. ``col2im`` is the adjoint: the same loop, adding each slice back
(``+=``), which is what the backward pass of im2col needs.
"""

from __future__ import annotations

from ..backend import get_array_module


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def pad2d(x, padding: int, value=0):
    """Pad the last two axes of ``x`` (N, C, H, W) by ``padding`` on each side."""
    if padding == 0:
        return x
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + 2 * padding, w + 2 * padding), value, dtype=x.dtype)
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
        i_end = i + stride * out_h
        for j in range(kw):
            j_end = j + stride * out_w
            col[:, :, i, j] = img[:, :, i:i_end:stride, j:j_end:stride]
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
    # Large enough for every slice below, even where the last rows/columns of the
    # padded image were never read (when (H + 2p - k) is not a multiple of s).
    hp = max(h + 2 * padding, stride * (out_h - 1) + kh)
    wp = max(w + 2 * padding, stride * (out_w - 1) + kw)
    img = xp.zeros((n, c, hp, wp), dtype=col.dtype)
    for i in range(kh):
        i_end = i + stride * out_h
        for j in range(kw):
            j_end = j + stride * out_w
            img[:, :, i:i_end:stride, j:j_end:stride] += col[:, :, i, j]
    return img[:, :, padding : padding + h, padding : padding + w]
