"""CUDA kernels (through CuPy) for im2col, col2im and the softmax cross-entropy.

Part of the accelerated path (``gpu.py`` launches them). The plain versions in
``minifcn/nn/`` loop in Python over kernel offsets; on the GPU each of these is
a single kernel launch instead:

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

Every kernel is plain CUDA C++ with no #include: ``kernel_source(name, dtypes)``
returns the exact string CuPy's ``RawKernel`` compiles with NVRTC (two typedefs
for the element types, then the kernel), so the tests can compile that same
string with NVRTC on a machine without a GPU, and run it as host C++ through
the CuPy stand-in. Each kernel is a grid-stride loop: any launch size covers
any array. Scalars are passed as NumPy scalars of the exact C parameter type.

``MINIFCN_CUDA_KERNELS=0`` or ``MINIFCN_ACCEL=0`` (see ``backend.cuda_kernels_enabled``)
turns these off; the layers then run their plain array code on CuPy.

The index formulas are spelled out in ``col2im_gather_reference`` (NumPy), which
the tests compare with ``col2im``.

CuPy is reached only through ``minifcn.backend.cupy_module``; nothing here runs
(or compiles) until a CuPy array arrives.
"""

from __future__ import annotations

import functools

import numpy as np

from ..backend import cupy_module

# C names of the element types a kernel can be compiled for.
C_TYPES = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.int32): "int",
    np.dtype(np.int64): "long long",
}
SCORE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Labels reach the loss as uint8 (train and evaluate send them so: 255 = ignore)
# or as int32/int64 (a user's own arrays).
LABEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.int64))

_GRID_STRIDE = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; "
_GRID_STRIDE += "i += (long long)blockDim.x * gridDim.x)"

_IM2COL = r"""
// col[i] for every flat index i of col: (N, C, kh, kw, out_h, out_w) when cn == 0,
// (C, kh, kw, N, out_h, out_w) when cn == 1. img is (N, C, h, w), C-contiguous.
extern "C" __global__ void minifcn_im2col(
        const T* img, T* col, const long long total, const int batch, const int channels,
        const int h, const int w, const int out_h, const int out_w, const int kh, const int kw,
        const int stride, const int pad, const int cn) {
    GRID_STRIDE {
        long long rest = i;
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
            col[i] = img[(((long long)n * channels + c) * h + row) * w + column];
        } else {
            col[i] = (T)0;
        }
    }
}
"""

_COL2IM = r"""
// img[i] for every flat index i of img (N, C, h, w). In padded coordinates the pixel
// sits at (hp, wp) = (row + pad, column + pad); col[n, c, ki, kj, y, x] came from it
// when y * stride + ki == hp and x * stride + kj == wp. col is stored as
// (N, C, kh, kw, out_h, out_w) when cn == 0, (C, kh, kw, N, out_h, out_w) when cn == 1.
extern "C" __global__ void minifcn_col2im(
        const T* col, T* img, const long long total, const int batch, const int channels,
        const int h, const int w, const int out_h, const int out_w, const int kh, const int kw,
        const int stride, const int pad, const int cn) {
    GRID_STRIDE {
        long long rest = i;
        const int column = rest % w;  rest /= w;
        const int row = rest % h;     rest /= h;
        const int c = rest % channels;
        const long long n = rest / channels;
        const int hp = row + pad, wp = column + pad;
        T acc = (T)0;
        for (int ki = hp % stride; ki < kh && ki <= hp; ki += stride) {
            const int y = (hp - ki) / stride;
            if (y >= out_h) continue;
            for (int kj = wp % stride; kj < kw && kj <= wp; kj += stride) {
                const int x = (wp - kj) / stride;
                if (x >= out_w) continue;
                const long long plane = cn ? ((long long)(c * kh + ki) * kw + kj) * batch + n
                                           : ((n * channels + c) * kh + ki) * kw + kj;
                acc += col[(plane * out_h + y) * out_w + x];
            }
        }
        img[i] = acc;
    }
}
"""

_XENT_FORWARD = r"""
// One thread per pixel i of labels (N, H*W); scores are (N, C, H*W). lse[i] is the
// log-sum-exp over classes, loss[i] = lse[i] - score of the label, 0 for pixels whose
// label is `ignore` or out of range [0, classes) (the caller counts and reports those).
extern "C" __global__ void minifcn_softmax_xent_forward(
        const T* scores, const L* labels, T* lse, T* loss, const long long total,
        const int classes, const long long hw, const long long ignore) {
    GRID_STRIDE {
        const long long n = i / hw, q = i % hw;
        const long long base = n * classes * hw + q;
        T m = scores[base];
        for (int k = 1; k < classes; ++k) {
            const T v = scores[base + k * hw];
            m = v > m ? v : m;
        }
        T sum = (T)0;
        for (int k = 0; k < classes; ++k) sum += exp(scores[base + k * hw] - m);
        const T log_sum = m + log(sum);
        lse[i] = log_sum;
        const long long label = (long long)labels[i];
        if (label == ignore || label < 0 || label >= classes) {
            loss[i] = (T)0;
        } else {
            loss[i] = log_sum - scores[base + label * hw];
        }
    }
}
"""

_XENT_BACKWARD = r"""
// One thread per entry i of scores / grad (N, C, H*W); lse and labels are (N, H*W).
// grad = (softmax - one_hot(label)) * scale, 0 on ignored pixels.
extern "C" __global__ void minifcn_softmax_xent_backward(
        const T* scores, const T* lse, const L* labels, T* grad, const long long total,
        const int classes, const long long hw, const long long ignore, const T scale) {
    GRID_STRIDE {
        const long long q = i % hw;
        const int k = (i / hw) % classes;
        const long long pixel = (i / (hw * classes)) * hw + q;
        const long long label = (long long)labels[pixel];
        if (label == ignore) {
            grad[i] = (T)0;
        } else {
            const T p = exp(scores[i] - lse[pixel]);
            grad[i] = (p - (k == label ? (T)1 : (T)0)) * scale;
        }
    }
}
"""

KERNELS = {  # name -> (source template, whether it takes a label type L)
    "minifcn_im2col": (_IM2COL, False),
    "minifcn_col2im": (_COL2IM, False),
    "minifcn_softmax_xent_forward": (_XENT_FORWARD, True),
    "minifcn_softmax_xent_backward": (_XENT_BACKWARD, True),
}


def kernel_source(name: str, dtype, label_dtype=None) -> str:
    """The exact CUDA source of kernel ``name`` for element type ``dtype`` (T) and, for
    the loss kernels, label type ``label_dtype`` (L): what NVRTC compiles."""
    template, takes_labels = KERNELS[name]
    lines = [f"typedef {C_TYPES[np.dtype(dtype)]} T;"]
    if takes_labels:
        lines.append(f"typedef {C_TYPES[np.dtype(label_dtype)]} L;")
    return "\n".join(lines) + "\n" + template.replace("GRID_STRIDE", _GRID_STRIDE)


def kernel_variants():
    """Every (name, dtype, label dtype) the layers can launch: what the tests compile."""
    for name, (_, takes_labels) in KERNELS.items():
        for dtype in SCORE_DTYPES:
            for label in LABEL_DTYPES if takes_labels else (None,):
                yield name, dtype, label


@functools.cache
def _kernel(name: str, dtype, label_dtype=None):
    """The compiled (lazily, once per type combination) CuPy RawKernel."""
    cp = cupy_module()
    if cp is None:
        raise RuntimeError("minifcn.accel.cuda_kernels needs CuPy")
    return cp.RawKernel(kernel_source(name, dtype, label_dtype), name)


_THREADS = 256


def _launch(name: str, total: int, args: tuple, dtype, label_dtype=None) -> None:
    """Run kernel ``name`` over ``total`` items (nothing to do for an empty array)."""
    if total == 0:
        return
    blocks = min((total + _THREADS - 1) // _THREADS, 65535)
    _kernel(name, np.dtype(dtype), None if label_dtype is None else np.dtype(label_dtype))(
        (blocks,), (_THREADS,), args
    )


def _geometry(n, c, h, w, out_h, out_w, kh, kw, stride, padding, layout):
    return tuple(np.int32(v) for v in (n, c, h, w, out_h, out_w, kh, kw, stride, padding)) + (
        np.int32(layout == "cn"),
    )


def im2col_gpu(x, kh: int, kw: int, stride: int, padding: int, col, layout: str = "nc"):
    """Fill ``col`` (C-contiguous, in ``layout``) from x (N, C, H, W); returns ``col``.

    Same result as the NumPy ``im2col``: col is (N, C, kh, kw, out_h, out_w) for
    "nc", (C, kh, kw, N, out_h, out_w) for "cn".
    """
    cp = cupy_module()
    x = cp.ascontiguousarray(x)
    n, c, h, w = x.shape
    out_h, out_w = col.shape[4:]
    geometry = _geometry(n, c, h, w, out_h, out_w, kh, kw, stride, padding, layout)
    _launch("minifcn_im2col", col.size, (x, col, np.int64(col.size)) + geometry, x.dtype)
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
    geometry = _geometry(n, c, h, w, out_h, out_w, kh, kw, stride, padding, layout)
    _launch("minifcn_col2im", img.size, (col, img, np.int64(img.size)) + geometry, col.dtype)
    return img


def softmax_xent_forward_gpu(scores, labels, ignore_index: int):
    """Per-pixel log-sum-exp and loss in one pass over the classes.

    Args:
        scores: (N, C, H, W) float32/float64; labels: (N, H, W) uint8/int32/int64.
    Returns:
        lse: (N, H, W), log(sum_c exp(scores)); loss: (N, H, W), lse - score[label],
        0 where the label is ``ignore_index`` or out of range (the caller checks the range).
    """
    cp = cupy_module()
    scores = cp.ascontiguousarray(scores)
    labels = cp.ascontiguousarray(labels)
    n, c, h, w = scores.shape
    lse = cp.empty((n, h, w), dtype=scores.dtype)
    loss = cp.empty((n, h, w), dtype=scores.dtype)
    args = (scores, labels, lse, loss, np.int64(lse.size), np.int32(c), np.int64(h * w))
    args += (np.int64(ignore_index),)
    _launch("minifcn_softmax_xent_forward", lse.size, args, scores.dtype, labels.dtype)
    return lse, loss


def softmax_xent_backward_gpu(scores, lse, labels, ignore_index: int, scale: float):
    """dscores (N, C, H, W) = (softmax - one_hot(label)) * scale, 0 on ignored pixels."""
    cp = cupy_module()
    scores = cp.ascontiguousarray(scores)
    labels = cp.ascontiguousarray(labels)
    n, c, h, w = scores.shape
    grad = cp.empty_like(scores)
    args = (scores, lse, labels, grad, np.int64(grad.size), np.int32(c), np.int64(h * w))
    args += (np.int64(ignore_index), scores.dtype.type(scale))
    _launch("minifcn_softmax_xent_backward", grad.size, args, scores.dtype, labels.dtype)
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
