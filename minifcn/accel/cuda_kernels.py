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
// With cn == 1, col may hold one more row (K + 1 rows of N * out_h * out_w): it is
// filled with ones, so that one matrix product gives the bias gradient with dW.
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
            if (c >= channels) {   // the row of ones after the K patch rows
                col[i] = (T)1;
                continue;
            }
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
// label is `ignore` or out of range [0, classes). status[i]: 0 ignored, 1 counted,
// 2 out of range (the caller reports those).
extern "C" __global__ void minifcn_softmax_xent_forward(
        const T* scores, const L* labels, T* lse, T* loss, unsigned char* status,
        const long long total, const int classes, const long long hw, const long long ignore) {
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
            status[i] = label == ignore ? 0 : 2;
        } else {
            loss[i] = log_sum - scores[base + label * hw];
            status[i] = 1;
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


_BIAS_NOP = r"""
// y (N, O, P) from the product t (O, N * P) of the batch-major convolution, plus the
// bias: y[n, o, p] = t[o, n * P + p] + bias[o]. One thread per entry i of y.
extern "C" __global__ void minifcn_bias_nop(
        const T* t, const T* bias, T* y, const long long total, const int batch,
        const int channels, const long long pixels) {
    GRID_STRIDE {
        const long long p = i % pixels;
        const long long rest = i / pixels;
        const int o = rest % channels;
        const long long n = rest / channels;
        y[i] = t[((long long)o * batch + n) * pixels + p] + bias[o];
    }
}
"""

_ACCUMULATE_WB = r"""
// The parameter gradients of a convolution from one product g (O, K + 1), whose last
// column is the bias gradient: dw[o, k] += g[o, k] (k < K), db[o] += g[o, K]. One
// thread per entry i of g.
extern "C" __global__ void minifcn_accumulate_wb(
        const T* g, T* dw, T* db, const long long total, const long long k_size) {
    GRID_STRIDE {
        const long long o = i / (k_size + 1), k = i % (k_size + 1);
        if (k < k_size) {
            dw[o * k_size + k] += g[i];
        } else {
            db[o] += g[i];
        }
    }
}
"""

_MAX_POOL = r"""
// One thread per output i of y (N, C, out_h, out_w): the maximum over its k x k window
// (stride s, padding p; positions outside the input are skipped, as -inf), and in
// arg the first winning offset ki * k + kj in row-major order (0 if none wins).
extern "C" __global__ void minifcn_max_pool(
        const T* x, T* y, int* arg, const long long total, const int h, const int w,
        const int out_h, const int out_w, const int k, const int s, const int p,
        const T lowest) {
    GRID_STRIDE {
        const int ox = i % out_w;
        const int oy = (i / out_w) % out_h;
        const long long plane = i / ((long long)out_w * out_h);
        const T* img = x + plane * h * w;
        T best = lowest;  // -inf
        int won = 0;
        for (int ki = 0; ki < k; ++ki) {
            const int row = oy * s + ki - p;
            if (row < 0 || row >= h) continue;
            for (int kj = 0; kj < k; ++kj) {
                const int column = ox * s + kj - p;
                if (column < 0 || column >= w) continue;
                const T v = img[(long long)row * w + column];
                if (v > best) {
                    best = v;
                    won = ki * k + kj;
                }
            }
        }
        y[i] = best;
        arg[i] = won;
    }
}
"""

_MAX_POOL_BACKWARD = r"""
// A gather: one thread per input pixel i of dx (N, C, h, w) sums the gradients of the
// windows it won (arg names the winning offset ki * k + kj of each window).
extern "C" __global__ void minifcn_max_pool_backward(
        const T* dy, const int* arg, T* dx, const long long total, const int h, const int w,
        const int out_h, const int out_w, const int k, const int s, const int p) {
    GRID_STRIDE {
        const int column = i % w;
        const int row = (i / w) % h;
        const long long plane = i / ((long long)w * h);
        const int hp = row + p, wp = column + p;   // in padded coordinates
        T acc = (T)0;
        for (int oy = hp / s; oy >= 0 && hp - oy * s < k; --oy) {
            if (oy >= out_h) continue;
            for (int ox = wp / s; ox >= 0 && wp - ox * s < k; --ox) {
                if (ox >= out_w) continue;
                const long long o = (plane * out_h + oy) * out_w + ox;
                if (arg[o] == (hp - oy * s) * k + (wp - ox * s)) acc += dy[o];
            }
        }
        dx[i] = acc;
    }
}
"""

_RELU = r"""
// y = x * (x > 0) (as the plain path: NaN stays NaN) and the mask x > 0, one thread each.
extern "C" __global__ void minifcn_relu(
        const T* x, T* y, unsigned char* mask, const long long total) {
    GRID_STRIDE {
        const T v = x[i];
        const unsigned char keep = v > (T)0;
        y[i] = v * (T)keep;
        mask[i] = keep;
    }
}
"""

_RELU_BACKWARD = r"""
// dx = dy * mask, one thread per entry.
extern "C" __global__ void minifcn_relu_backward(
        const T* dy, const unsigned char* mask, T* dx, const long long total) {
    GRID_STRIDE {
        dx[i] = dy[i] * (T)mask[i];
    }
}
"""

_SCALE_BY_MASK = r"""
// y = x * (keep * scale), one thread per entry: dropout's forward (x the input) and its
// backward (x the upstream gradient), with the values of the plain path's mask.
extern "C" __global__ void minifcn_scale_by_mask(
        const T* x, const unsigned char* keep, T* y, const T scale, const long long total) {
    GRID_STRIDE {
        y[i] = x[i] * ((T)keep[i] * scale);
    }
}
"""

_XENT_PARTIALS = r"""
// One thread per chunk of `chunk` pixels of the per-pixel loss and status (0 ignored,
// 1 counted, 2 a label out of range): partial[3 * j .. 3 * j + 2] = that chunk's loss
// sum, counted pixels and out-of-range labels, in double, in pixel order (so the
// result does not depend on the launch, unlike atomics).
extern "C" __global__ void minifcn_xent_partials(
        const T* loss, const unsigned char* status, double* partial, const long long total,
        const long long pixels, const long long chunk) {
    GRID_STRIDE {
        double sum = 0.0, counted = 0.0, bad = 0.0;
        const long long end = (i + 1) * chunk < pixels ? (i + 1) * chunk : pixels;
        for (long long q = i * chunk; q < end; ++q) {
            sum += (double)loss[q];
            counted += status[q] == 1;
            bad += status[q] == 2;
        }
        partial[3 * i] = sum;
        partial[3 * i + 1] = counted;
        partial[3 * i + 2] = bad;
    }
}
"""

_ADAM = r"""
// One fused Adam step over all parameters, packed into flat buffers, one thread per
// entry. The parameters are segments of the buffers: entry i belongs to the first
// segment j with i < ends[j]. Everything that changes from step to step is read from
// device memory, hyper[9 * j ...]: active (0 skips a frozen parameter), the step size
// lr / (1 - beta1^t), sqrt(1 - beta2^t), weight decay, beta1, 1 - beta1, beta2,
// 1 - beta2, eps. The arithmetic is the per-parameter NumPy update's, in its order.
extern "C" __global__ void minifcn_adam(
        T* param, const T* grad, T* exp_avg, T* exp_avg_sq, const long long* ends,
        const T* hyper, const int segments, const long long total) {
    GRID_STRIDE {
        int lo = 0, hi = segments - 1;
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (i < ends[mid]) hi = mid; else lo = mid + 1;
        }
        const T* hp = hyper + 9 * lo;
        if (hp[0] == (T)0) continue;
        T g = grad[i];
        if (hp[3] != (T)0) g = g + hp[3] * param[i];
        const T m = exp_avg[i] * hp[4] + hp[5] * g;
        const T v = exp_avg_sq[i] * hp[6] + hp[7] * (g * g);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        const T denom = sqrt(v) / hp[2] + hp[8];
        param[i] = param[i] - hp[1] * (m / denom);
    }
}
"""

_SGD = r"""
// One fused SGD step (momentum, weight decay) over packed parameters, as minifcn_adam:
// hyper[5 * j ...] = active, lr, weight decay, momentum (0: no buffer), and whether
// the momentum buffer holds a value yet (the first step sets it to the gradient).
extern "C" __global__ void minifcn_sgd(
        T* param, const T* grad, T* momentum_buffer, const long long* ends, const T* hyper,
        const int segments, const long long total) {
    GRID_STRIDE {
        int lo = 0, hi = segments - 1;
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (i < ends[mid]) hi = mid; else lo = mid + 1;
        }
        const T* hp = hyper + 5 * lo;
        if (hp[0] == (T)0) continue;
        T g = grad[i];
        if (hp[2] != (T)0) g = g + hp[2] * param[i];
        if (hp[3] != (T)0) {
            g = hp[4] != (T)0 ? momentum_buffer[i] * hp[3] + g : g;
            momentum_buffer[i] = g;
        }
        param[i] = param[i] - hp[1] * g;
    }
}
"""

KERNELS = {  # name -> (source template, whether it takes a label type L)
    "minifcn_im2col": (_IM2COL, False),
    "minifcn_col2im": (_COL2IM, False),
    "minifcn_softmax_xent_forward": (_XENT_FORWARD, True),
    "minifcn_softmax_xent_backward": (_XENT_BACKWARD, True),
    "minifcn_xent_partials": (_XENT_PARTIALS, False),
    "minifcn_scale_by_mask": (_SCALE_BY_MASK, False),
    "minifcn_bias_nop": (_BIAS_NOP, False),
    "minifcn_accumulate_wb": (_ACCUMULATE_WB, False),
    "minifcn_max_pool": (_MAX_POOL, False),
    "minifcn_max_pool_backward": (_MAX_POOL_BACKWARD, False),
    "minifcn_relu": (_RELU, False),
    "minifcn_relu_backward": (_RELU_BACKWARD, False),
    "minifcn_adam": (_ADAM, False),
    "minifcn_sgd": (_SGD, False),
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


def im2col_gpu(
    x, kh: int, kw: int, stride: int, padding: int, col, layout: str = "nc", out_size=None
):
    """Fill ``col`` (C-contiguous, in ``layout``) from x (N, C, H, W); returns ``col``.

    Same result as the NumPy ``im2col``: col is (N, C, kh, kw, out_h, out_w) for
    "nc", (C, kh, kw, N, out_h, out_w) for "cn". With ``out_size=(out_h, out_w)``,
    col may be any C-contiguous array of K or K + 1 rows of N*out_h*out_w entries
    ("cn"); the extra row is filled with ones.
    """
    cp = cupy_module()
    x = cp.ascontiguousarray(x)
    n, c, h, w = x.shape
    out_h, out_w = col.shape[4:] if out_size is None else out_size
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
        0 where the label is ``ignore_index`` or out of range; status: (N, H, W) uint8,
        0 ignored, 1 counted, 2 out of range.
    """
    cp = cupy_module()
    scores = cp.ascontiguousarray(scores)
    labels = cp.ascontiguousarray(labels)
    n, c, h, w = scores.shape
    lse = cp.empty((n, h, w), dtype=scores.dtype)
    loss = cp.empty((n, h, w), dtype=scores.dtype)
    status = cp.empty((n, h, w), dtype=cp.uint8)
    args = (scores, labels, lse, loss, status, np.int64(lse.size), np.int32(c))
    args += (np.int64(h * w), np.int64(ignore_index))
    _launch("minifcn_softmax_xent_forward", lse.size, args, scores.dtype, labels.dtype)
    return lse, loss, status


XENT_CHUNK = 256  # pixels summed by one thread of minifcn_xent_partials


def xent_partials_gpu(loss, status):
    """(chunks, 3) float64: each chunk's loss sum, counted pixels and out-of-range labels."""
    cp = cupy_module()
    chunks = max(1, -(-loss.size // XENT_CHUNK))
    partial = cp.empty((chunks, 3), dtype=cp.float64)
    args = (loss, status, partial, np.int64(chunks), np.int64(loss.size), np.int64(XENT_CHUNK))
    _launch("minifcn_xent_partials", chunks, args, loss.dtype)
    return partial


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


def bias_nop_gpu(t, bias, n: int, pixels: int):
    """y (N, O, P) = t (O, N * P) regrouped by image, plus bias (O,), in one pass."""
    cp = cupy_module()
    o = bias.shape[0]
    y = cp.empty((n, o, pixels), dtype=t.dtype)
    args = (t, bias, y, np.int64(y.size), np.int32(n), np.int32(o), np.int64(pixels))
    _launch("minifcn_bias_nop", y.size, args, t.dtype)
    return y


def accumulate_wb_gpu(g, weight_grad, bias_grad) -> None:
    """weight_grad (O, K) += g[:, :K], bias_grad (O,) += g[:, K]; g is (O, K + 1)."""
    k = g.shape[1] - 1
    args = (g, weight_grad, bias_grad, np.int64(g.size), np.int64(k))
    _launch("minifcn_accumulate_wb", g.size, args, g.dtype)


def max_pool_gpu(x, k: int, s: int, p: int, out_h: int, out_w: int):
    """y (N, C, out_h, out_w) and arg (int32, the first winning offset ki * k + kj)."""
    cp = cupy_module()
    x = cp.ascontiguousarray(x)
    n, c, h, w = x.shape
    y = cp.empty((n, c, out_h, out_w), dtype=x.dtype)
    arg = cp.empty((n, c, out_h, out_w), dtype=cp.int32)
    geometry = tuple(np.int32(v) for v in (h, w, out_h, out_w, k, s, p))
    args = (x, y, arg, np.int64(y.size)) + geometry + (x.dtype.type(-np.inf),)
    _launch("minifcn_max_pool", y.size, args, x.dtype)
    return y, arg


def max_pool_backward_gpu(dy, arg, x_shape, k: int, s: int, p: int):
    """dx (N, C, H, W): each pixel gathers the gradients of the windows it won."""
    cp = cupy_module()
    dy = cp.ascontiguousarray(dy)
    n, c, h, w = x_shape
    out_h, out_w = dy.shape[2:]
    dx = cp.empty((n, c, h, w), dtype=dy.dtype)
    geometry = tuple(np.int32(v) for v in (h, w, out_h, out_w, k, s, p))
    _launch("minifcn_max_pool_backward", dx.size, (dy, arg, dx, np.int64(dx.size)) + geometry,
            dy.dtype)  # fmt: skip
    return dx


def relu_gpu(x):
    """y = x * (x > 0) and the mask (uint8), in one pass."""
    cp = cupy_module()
    x = cp.ascontiguousarray(x)
    y = cp.empty_like(x)
    mask = cp.empty(x.shape, dtype=cp.uint8)
    _launch("minifcn_relu", x.size, (x, y, mask, np.int64(x.size)), x.dtype)
    return y, mask


def relu_backward_gpu(dy, mask):
    """dx = dy * mask, in one pass."""
    cp = cupy_module()
    dy = cp.ascontiguousarray(dy)
    dx = cp.empty_like(dy)
    _launch("minifcn_relu_backward", dy.size, (dy, mask, dx, np.int64(dy.size)), dy.dtype)
    return dx


def scale_by_mask_gpu(x, keep, scale: float):
    """x * (keep * scale) in one pass; keep is uint8 on the device."""
    cp = cupy_module()
    x = cp.ascontiguousarray(x)
    y = cp.empty_like(x)
    args = (x, keep, y, x.dtype.type(scale), np.int64(x.size))
    _launch("minifcn_scale_by_mask", x.size, args, x.dtype)
    return y


def adam_gpu(param, grad, exp_avg, exp_avg_sq, ends, hyper) -> None:
    """One Adam step over flat buffers (see the kernel for ``ends`` and ``hyper``)."""
    args = (param, grad, exp_avg, exp_avg_sq, ends, hyper, np.int32(ends.size))
    _launch("minifcn_adam", param.size, args + (np.int64(param.size),), param.dtype)


def sgd_gpu(param, grad, momentum_buffer, ends, hyper) -> None:
    """One SGD step over flat buffers (see the kernel for ``ends`` and ``hyper``)."""
    args = (param, grad, momentum_buffer, ends, hyper, np.int32(ends.size))
    _launch("minifcn_sgd", param.size, args + (np.int64(param.size),), param.dtype)


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
