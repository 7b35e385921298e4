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

Layouts. ``layout="nc"`` (the default) is the one above. ``layout="cn"`` stores
the same entries as (C, kh, kw, N, out_h, out_w): reshaped to a matrix
(C*kh*kw, N*out_h*out_w) it makes the whole batch ONE matrix product instead
of N small ones, which BLAS runs much faster when out_h*out_w is small (deep
layers) and for the weight gradient, which sums over the batch. ``conv.py``
uses it; both layouts are filled by the same loop, written through a
transposed view.

Two faster variants compute exactly the same arrays:

* When the stride divides a large kernel (FCN's 16/8 and 64/32 upsampling),
  the image is viewed as blocks of stride x stride pixels and the loop runs
  over whole blocks of kernel offsets: (k/s)^2 slice copies instead of k^2,
  which matters for k = 64 (4 Python-level copies instead of 4096).
* On the GPU (CuPy arrays), ``cuda_kernels.py`` does each in one kernel launch:
  im2col with one thread per ``col`` entry, col2im as a gather with one thread
  per image pixel.
"""

from __future__ import annotations

import numpy as np

from ..backend import cuda_kernels_enabled, get_array_module


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
    """Use the stride-block loop: the stride divides both kernel sides, and the kernel
    has enough offsets (>= 64) for saving Python-level iterations to matter."""
    return stride > 1 and kh % stride == 0 and kw % stride == 0 and kh * kw >= 64


LAYOUTS = ("nc", "cn")


def col_shape(x_shape, kh: int, kw: int, stride: int, padding: int, layout: str = "nc"):
    """The shape of ``im2col(x, ...)`` for an input of shape ``x_shape`` (N, C, H, W)."""
    n, c, h, w = x_shape
    out_h = conv_output_size(h, kh, stride, padding)
    out_w = conv_output_size(w, kw, stride, padding)
    if layout == "nc":
        return (n, c, kh, kw, out_h, out_w)
    if layout == "cn":
        return (c, kh, kw, n, out_h, out_w)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _as_nc(col, layout: str):
    """A (N, C, kh, kw, out_h, out_w) view of ``col`` stored in ``layout``."""
    return col if layout == "nc" else col.transpose(3, 0, 1, 2, 4, 5)


def im2col(x, kh: int, kw: int, stride: int, padding: int, out=None, layout: str = "nc"):
    """Gather every kh x kw patch of ``x``.

    Args:
        x: (N, C, H, W).
        out: optional C-contiguous array of the result's shape to write into
            (a reused buffer); a new one is allocated when None.
        layout: "nc" or "cn" (see the module docstring).
    Returns:
        col: (N, C, kh, kw, out_h, out_w) for "nc", where ``col[n, c, i, j, y, x]``
        is the padded input at row ``y*stride + i`` and column ``x*stride + j``;
        (C, kh, kw, N, out_h, out_w) holding the same entries for "cn".
    """
    xp = get_array_module(x)
    shape = col_shape(x.shape, kh, kw, stride, padding, layout)
    col = xp.empty(shape, dtype=x.dtype) if out is None else out
    if col.shape != shape or col.dtype != x.dtype or not col.flags.c_contiguous:
        raise ValueError(f"im2col: out must be a C-contiguous {x.dtype} array of shape {shape}")
    if xp is not np and cuda_kernels_enabled():
        from .cuda_kernels import im2col_gpu

        return im2col_gpu(x, kh, kw, stride, padding, col, layout)
    img = pad2d(x, padding)
    view = _as_nc(col, layout)  # (N, C, kh, kw, out_h, out_w), writes land in col
    if _blocked(kh, kw, stride):
        _im2col_blocked(img, view, stride)
        return col
    out_h, out_w = view.shape[4:]
    for i in range(kh):
        i_end = i + stride * out_h
        for j in range(kw):
            j_end = j + stride * out_w
            view[:, :, i, j] = img[:, :, i:i_end:stride, j:j_end:stride]
    return col


def _im2col_blocked(img, col, s: int) -> None:
    """im2col when the stride s divides the kernel: loop over s x s blocks of offsets.

    Write the kernel offset as i = a*s + u (0 <= u < s). The input row read by
    output row y is y*s + i = (y + a)*s + u: row u of block y + a. So viewing
    the padded image as blocks (N, C, Hb, s, Wb, s), every offset (a*s + u,
    b*s + v) with the same block offset (a, b) is one slice of that view.

    img: padded (N, C, Hp, Wp); col: (N, C, kh, kw, out_h, out_w) (possibly a
    transposed view), filled in place.
    """
    n, c, kh, kw, out_h, out_w = col.shape
    bh, bw = kh // s, kw // s
    hb, wb = out_h - 1 + bh, out_w - 1 + bw  # blocks read; hb*s <= Hp by the output-size rule
    blocks = img[:, :, : hb * s, : wb * s].reshape(n, c, hb, s, wb, s)
    col8 = col.reshape(n, c, bh, s, bw, s, out_h, out_w)  # splits two axes: always a view
    for a in range(bh):
        for b in range(bw):
            # (N, C, out_h, u, out_w, v) -> (N, C, u, v, out_h, out_w)
            patch = blocks[:, :, a : a + out_h, :, b : b + out_w]
            col8[:, :, a, :, b] = patch.transpose(0, 1, 3, 5, 2, 4)


def col2im(col, h: int, w: int, stride: int, padding: int, layout: str = "nc"):
    """The adjoint of ``im2col``: add every patch back where it came from.

    Args:
        col: (N, C, kh, kw, out_h, out_w), or (C, kh, kw, N, out_h, out_w) for
            ``layout="cn"``.
        h, w: the spatial size of the (unpadded) image to rebuild.
    Returns:
        img: (N, C, h, w), where each input pixel holds the sum of all ``col``
        entries that were copied from it. Entries that came from the padding are
        dropped.
    """
    xp = get_array_module(col)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if xp is not np and cuda_kernels_enabled():
        from .cuda_kernels import col2im_gpu

        return col2im_gpu(col, h, w, stride, padding, layout)
    col = _as_nc(col, layout)
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

    col: (N, C, kh, kw, out_h, out_w) (possibly a transposed view). Returns the
    padded image (N, C, >= hp, >= wp).
    """
    n, c, kh, kw, out_h, out_w = col.shape
    bh, bw = kh // s, kw // s
    hb, wb = -(-hp // s), -(-wp // s)  # whole blocks covering the padded image
    img = get_array_module(col).zeros((n, c, hb * s, wb * s), dtype=col.dtype)
    blocks = img.reshape(n, c, hb, s, wb, s)
    col8 = col.reshape(n, c, bh, s, bw, s, out_h, out_w)
    for a in range(bh):
        for b in range(bw):
            # (N, C, u, v, out_h, out_w) -> (N, C, out_h, u, out_w, v)
            patch = col8[:, :, a, :, b].transpose(0, 1, 4, 2, 5, 3)
            blocks[:, :, a : a + out_h, :, b : b + out_w] += patch
    return img
