"""CUDA kernels (through CuPy) for im2col, col2im and the softmax cross-entropy.

The NumPy versions loop in Python over kernel offsets; on the GPU each of these
is a single kernel launch instead:

* ``im2col_gpu``: one thread per entry of ``col`` (N, C, kh, kw, out_h, out_w)
  works out which input pixel it copies (or that it lies in the padding).
* ``col2im_gpu``: a *gather*, one thread per image pixel, summing the ``col``
  entries copied from that pixel. No two threads write the same place, so no
  atomics are needed and the result is deterministic; each pixel adds its
  terms in the order the NumPy loop does ((i, j) row-major).
* ``softmax_xent_forward_gpu`` / ``softmax_xent_backward_gpu``: one thread per
  pixel computes the log-sum-exp over the classes and the pixel's loss; the
  backward is one elementwise pass, softmax - one_hot, recomputed from the
  stored log-sum-exp instead of storing all the probabilities.

The index formulas are spelled out in ``col2im_gather_reference`` (NumPy), which
the tests compare with ``col2im`` on machines without a GPU.

CuPy is reached only through ``minifcn.backend.cupy_module``; nothing here runs
(or compiles) until a CuPy array arrives.
"""

from __future__ import annotations

import functools

import numpy as np

from ..backend import cupy_module

_IM2COL = r"""
    // i: flat index into col, row-major: (N, C, kh, kw, out_h, out_w) when cn == 0,
    // (C, kh, kw, N, out_h, out_w) when cn == 1. img is (N, C, h, w).
    ptrdiff_t rest = i;
    const int x = rest % out_w;  rest /= out_w;
    const int y = rest % out_h;  rest /= out_h;
    int n, c, ki, kj;
    if (cn) {
        n = rest % batch;      rest /= batch;
        kj = rest % kw;        rest /= kw;
        ki = rest % kh;        c = rest / kh;
    } else {
        kj = rest % kw;        rest /= kw;
        ki = rest % kh;        rest /= kh;
        c = rest % channels;   n = rest / channels;
    }
    const int row = y * stride + ki - pad;     // in unpadded input coordinates
    const int column = x * stride + kj - pad;
    if (row >= 0 && row < h && column >= 0 && column < w) {
        col = img[(((ptrdiff_t)n * channels + c) * h + row) * w + column];
    } else {
        col = (T)0;
    }
"""

_COL2IM_GATHER = r"""
    // i: flat index into img (N, C, h, w). In padded coordinates the pixel sits at
    // (hp, wp) = (row + pad, column + pad); col[n, c, ki, kj, y, x] came from it when
    // y * stride + ki == hp and x * stride + kj == wp. col is stored as
    // (N, C, kh, kw, out_h, out_w) when cn == 0, (C, kh, kw, N, out_h, out_w) when cn == 1.
    ptrdiff_t rest = i;
    const int column = rest % w;  rest /= w;
    const int row = rest % h;     rest /= h;
    const int c = rest % channels;
    const ptrdiff_t n = rest / channels;
    const int hp = row + pad, wp = column + pad;
    T acc = (T)0;
    for (int ki = hp % stride; ki < kh && ki <= hp; ki += stride) {
        const int y = (hp - ki) / stride;
        if (y >= out_h) continue;
        for (int kj = wp % stride; kj < kw && kj <= wp; kj += stride) {
            const int x = (wp - kj) / stride;
            if (x >= out_w) continue;
            const ptrdiff_t plane = cn ? ((ptrdiff_t)(c * kh + ki) * kw + kj) * batch + n
                                       : ((n * channels + c) * kh + ki) * kw + kj;
            acc += col[(plane * out_h + y) * out_w + x];
        }
    }
    img = acc;
"""

_XENT_FORWARD = r"""
    // i: flat pixel index into labels (N, H*W); scores are (N, C, H*W).
    const ptrdiff_t n = i / hw, q = i % hw;
    const ptrdiff_t base = n * classes * hw + q;
    T m = scores[base];
    for (int k = 1; k < classes; ++k) {
        const T v = scores[base + k * hw];
        m = v > m ? v : m;
    }
    T total = (T)0;
    for (int k = 0; k < classes; ++k) total += exp(scores[base + k * hw] - m);
    const T log_sum = m + log(total);
    lse = log_sum;
    if (label == ignore) {
        loss = (T)0;
    } else {
        loss = log_sum - scores[base + (ptrdiff_t)label * hw];
    }
"""

_XENT_BACKWARD = r"""
    // i: flat index into scores / grad (N, C, H*W); lse and labels are (N, H*W).
    const ptrdiff_t q = i % hw;
    const int k = (i / hw) % classes;
    const ptrdiff_t pixel = (i / (hw * classes)) * hw + q;
    const L lab = labels[pixel];
    if (lab == ignore) {
        grad = (T)0;
    } else {
        const T p = exp(score - lse[pixel]);
        grad = (p - (k == lab ? (T)1 : (T)0)) * scale;
    }
"""


@functools.cache
def _kernels():
    """Compile (lazily, once) and return the CuPy kernels."""
    cp = cupy_module()
    if cp is None:
        raise RuntimeError("minifcn.nn.cuda_kernels needs CuPy")
    geometry = "int32 batch, int32 channels, int32 h, int32 w, int32 out_h, int32 out_w, "
    geometry += "int32 kh, int32 kw, int32 stride, int32 pad, int32 cn"
    return {
        "im2col": cp.ElementwiseKernel(
            "raw T img, " + geometry, "T col", _IM2COL, "minifcn_im2col"
        ),
        "col2im": cp.ElementwiseKernel(
            "raw T col, " + geometry, "T img", _COL2IM_GATHER, "minifcn_col2im_gather"
        ),
        "xent_forward": cp.ElementwiseKernel(
            "raw T scores, L label, int32 classes, int64 hw, int64 ignore",
            "T lse, T loss",
            _XENT_FORWARD,
            "minifcn_softmax_xent_forward",
        ),
        "xent_backward": cp.ElementwiseKernel(
            "T score, raw T lse, raw L labels, int32 classes, int64 hw, int64 ignore, T scale",
            "T grad",
            _XENT_BACKWARD,
            "minifcn_softmax_xent_backward",
        ),
    }


def im2col_gpu(x, kh: int, kw: int, stride: int, padding: int, col, layout: str = "nc"):
    """Fill ``col`` (C-contiguous, in ``layout``) from x (N, C, H, W); returns ``col``.

    Same result as the NumPy ``im2col``: col is (N, C, kh, kw, out_h, out_w) for
    "nc", (C, kh, kw, N, out_h, out_w) for "cn".
    """
    cp = cupy_module()
    x = cp.ascontiguousarray(x)
    n, c, h, w = x.shape
    out_h, out_w = col.shape[4:]
    cn = int(layout == "cn")
    _kernels()["im2col"](x, n, c, h, w, out_h, out_w, kh, kw, stride, padding, cn, col)
    return col


def col2im_gpu(col, h: int, w: int, stride: int, padding: int, layout: str = "nc"):
    """col in ``layout`` -> img (N, C, h, w), as the NumPy ``col2im``."""
    cp = cupy_module()
    col = cp.ascontiguousarray(col)
    if layout == "cn":
        c, kh, kw, n, out_h, out_w = col.shape
    else:
        n, c, kh, kw, out_h, out_w = col.shape
    img = cp.empty((n, c, h, w), dtype=col.dtype)
    cn = int(layout == "cn")
    _kernels()["col2im"](col, n, c, h, w, out_h, out_w, kh, kw, stride, padding, cn, img)
    return img


def softmax_xent_forward_gpu(scores, labels, ignore_index: int):
    """Per-pixel log-sum-exp and loss in one pass over the classes.

    Args:
        scores: (N, C, H, W) float; labels: (N, H, W) int (already range-checked).
    Returns:
        lse: (N, H, W), log(sum_c exp(scores)); loss: (N, H, W), lse - score[label],
        0 where the label is ``ignore_index``.
    """
    cp = cupy_module()
    scores = cp.ascontiguousarray(scores)
    labels = cp.ascontiguousarray(labels)
    n, c, h, w = scores.shape
    lse = cp.empty((n, h, w), dtype=scores.dtype)
    loss = cp.empty((n, h, w), dtype=scores.dtype)
    _kernels()["xent_forward"](scores, labels, c, h * w, ignore_index, lse, loss)
    return lse, loss


def softmax_xent_backward_gpu(scores, lse, labels, ignore_index: int, scale: float):
    """dscores (N, C, H, W) = (softmax - one_hot(label)) * scale, 0 on ignored pixels."""
    cp = cupy_module()
    scores = cp.ascontiguousarray(scores)
    n, c, h, w = scores.shape
    grad = cp.empty_like(scores)
    labels = cp.ascontiguousarray(labels)
    scale = scores.dtype.type(scale)
    _kernels()["xent_backward"](scores, lse, labels, c, h * w, ignore_index, scale, grad)
    return grad


def col2im_gather_reference(col, h: int, w: int, stride: int, padding: int, layout="nc"):
    """The gather formula of ``col2im_gpu``, in NumPy (for tests; slow).

    For every image pixel (row, column) it sums ``col[:, :, ki, kj, y, x]`` over
    ki = (row + pad) % stride, + stride, ... < kh with y = (row + pad - ki) / stride
    in [0, out_h), and likewise for kj / x: exactly the loops of the kernel, with
    the pixel loops vectorised.

    col: (N, C, kh, kw, out_h, out_w), or (C, kh, kw, N, out_h, out_w) for
    ``layout="cn"`` -> img (N, C, h, w).
    """
    if layout == "cn":
        col = col.transpose(3, 0, 1, 2, 4, 5)
    n, c, kh, kw, out_h, out_w = col.shape
    img = np.zeros((n, c, h, w), dtype=col.dtype)
    hp = np.arange(h)[:, None] + padding  # (h, 1)
    wp = np.arange(w)[None, :] + padding  # (1, w)
    for ki in range(kh):
        ty = hp - ki
        y_ok = (ty >= 0) & (ty % stride == 0) & (ty // stride < out_h)
        y = np.where(y_ok, ty // stride, 0)
        for kj in range(kw):
            tx = wp - kj
            x_ok = (tx >= 0) & (tx % stride == 0) & (tx // stride < out_w)
            x = np.where(x_ok, tx // stride, 0)
            picked = col[:, :, ki, kj][:, :, y, x]  # (N, C, h, w) by broadcasting (h,1),(1,w)
            img += np.where(y_ok & x_ok, picked, 0)
    return img
