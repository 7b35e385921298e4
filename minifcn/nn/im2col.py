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

Two faster variants compute exactly the same arrays:

* When the stride divides the kernel (FCN's upsampling: 4/2, 16/8, 64/32), the
  image is viewed as blocks of stride x stride pixels and the loop runs over
  whole blocks of kernel offsets: (k/s)^2 slice copies instead of k^2, which
  matters for k = 64 (4 Python-level copies instead of 4096).
* On the GPU (CuPy arrays), ``cuda_kernels.py`` does each in one kernel launch:
  im2col with one thread per ``col`` entry, col2im as a gather with one thread
  per image pixel.
"""

from __future__ import annotations

import numpy as np

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


def _blocked(kh: int, kw: int, stride: int) -> bool:
    """Use the stride-block loop: the stride divides both kernel sides (and is > 1)."""
    return stride > 1 and kh % stride == 0 and kw % stride == 0


def im2col(x, kh: int, kw: int, stride: int, padding: int, out=None):
    """Gather every kh x kw patch of ``x``.

    Args:
        x: (N, C, H, W).
        out: optional C-contiguous (N, C, kh, kw, out_h, out_w) array to write
            into (a reused buffer); a new one is allocated when None.
    Returns:
        col: (N, C, kh, kw, out_h, out_w), where ``col[n, c, i, j, y, x]`` is the
        padded input at row ``y*stride + i`` and column ``x*stride + j``.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out_h = conv_output_size(h, kh, stride, padding)
    out_w = conv_output_size(w, kw, stride, padding)
    shape = (n, c, kh, kw, out_h, out_w)
    col = xp.empty(shape, dtype=x.dtype) if out is None else out
    if col.shape != shape or not col.flags.c_contiguous:
        raise ValueError(f"im2col: out must be a C-contiguous array of shape {shape}")
    if xp is not np:
        from .cuda_kernels import im2col_gpu

        return im2col_gpu(x, kh, kw, stride, padding, col)
    img = pad2d(x, padding)
    if _blocked(kh, kw, stride):
        _im2col_blocked(img, col, stride)
        return col
    for i in range(kh):
        i_end = i + stride * out_h
        for j in range(kw):
            j_end = j + stride * out_w
            col[:, :, i, j] = img[:, :, i:i_end:stride, j:j_end:stride]
    return col


def _im2col_blocked(img, col, s: int) -> None:
    """im2col when the stride s divides the kernel: loop over s x s blocks of offsets.

    Write the kernel offset as i = a*s + u (0 <= u < s). The input row read by
    output row y is y*s + i = (y + a)*s + u: row u of block y + a. So viewing
    the padded image as blocks (N, C, Hb, s, Wb, s), every offset (a*s + u,
    b*s + v) with the same block offset (a, b) is one slice of that view.

    img: padded (N, C, Hp, Wp); col: (N, C, kh, kw, out_h, out_w), filled in place.
    """
    n, c, kh, kw, out_h, out_w = col.shape
    bh, bw = kh // s, kw // s
    hb, wb = out_h - 1 + bh, out_w - 1 + bw  # blocks read; hb*s <= Hp by the output-size rule
    blocks = img[:, :, : hb * s, : wb * s].reshape(n, c, hb, s, wb, s)
    col8 = col.reshape(n, c, bh, s, bw, s, out_h, out_w)
    for a in range(bh):
        for b in range(bw):
            # (N, C, out_h, u, out_w, v) -> (N, C, u, v, out_h, out_w)
            patch = blocks[:, :, a : a + out_h, :, b : b + out_w]
            col8[:, :, a, :, b] = patch.transpose(0, 1, 3, 5, 2, 4)


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
    if xp is not np:
        from .cuda_kernels import col2im_gpu

        return col2im_gpu(col, h, w, stride, padding)
    n, c, kh, kw, out_h, out_w = col.shape
    # Large enough for every slice below, even where the last rows/columns of the
    # padded image were never read (when (H + 2p - k) is not a multiple of s).
    hp = max(h + 2 * padding, stride * (out_h - 1) + kh)
    wp = max(w + 2 * padding, stride * (out_w - 1) + kw)
    if _blocked(kh, kw, stride):
        img = _col2im_blocked(col, hp, wp, stride)
    else:
        img = xp.zeros((n, c, hp, wp), dtype=col.dtype)
        for i in range(kh):
            i_end = i + stride * out_h
            for j in range(kw):
                j_end = j + stride * out_w
                img[:, :, i:i_end:stride, j:j_end:stride] += col[:, :, i, j]
    return img[:, :, padding : padding + h, padding : padding + w]


def _col2im_blocked(col, hp: int, wp: int, s: int):
    """col2im when the stride s divides the kernel; the adjoint of ``_im2col_blocked``.

    col: (N, C, kh, kw, out_h, out_w). Returns the padded image (N, C, >= hp, >= wp).
    """
    n, c, kh, kw, out_h, out_w = col.shape
    bh, bw = kh // s, kw // s
    hb, wb = -(-hp // s), -(-wp // s)  # whole blocks covering the padded image
    img = np.zeros((n, c, hb * s, wb * s), dtype=col.dtype)
    blocks = img.reshape(n, c, hb, s, wb, s)
    col8 = col.reshape(n, c, bh, s, bw, s, out_h, out_w)
    for a in range(bh):
        for b in range(bw):
            # (N, C, u, v, out_h, out_w) -> (N, C, out_h, u, out_w, v)
            blocks[:, :, a : a + out_h, :, b : b + out_w] += col8[:, :, a, :, b].transpose(
                0, 1, 4, 2, 5, 3
            )
    return img
