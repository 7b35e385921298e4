"""The accelerated path on NumPy: the plain layers' results, computed with less memory traffic.

Every function has the name, arguments and results of its plain twin in
``minifcn/nn/`` (only the state kept for backward differs). What each one buys
is measured by ``python -m minifcn.bench`` (its "plain ms" column).

Convolution (``conv2d``, ``conv2d_input_grad``, ``conv2d_weight_grad``)
    * Large maps and few (<= 32) output channels, where the product is bound by
      memory traffic, not arithmetic: the loop over images, and over bands of
      output rows, is the outer loop. Each band's patches (about 1 MiB) are
      gathered into one reused buffer, multiplied, and dropped; backward gathers
      them again from the saved padded input. The tens of megabytes of patches
      of the whole batch are never written to memory, and col2im adds into one
      band of one image at a time, which stays in cache during its kh*kw passes.
    * Small maps: the patches are stored as (C, kh, kw, N, out_h, out_w), so
      that the whole batch is ONE matrix product (O, K) @ (K, N*P), which BLAS
      runs much faster than N small ones.
    * 1x1 kernels, stride 1, no padding: the image is its own patch matrix.
Transposed convolution (``conv_transpose2d``, ``conv_transpose2d_backward``)
    The "sub-pixel" form: with the kernel zero-padded to m*s (m = ceil(k/s)), output
    pixel (R*s + u, S*s + v) is a sum over an m x m window of input pixels with
    weights that depend only on the phase (u, v). So every output block of s x s
    pixels comes from ONE small im2col (an m x m window of the input, K = I*m*m)
    times a (K, O*s*s) matrix, and backward is the transposed products. No
    col2im over a (I*k*k)-row matrix: FCN's 16/8 and 64/32 upsampling get 4x fewer
    multiply-adds of memory traffic than as the adjoint of a convolution.
Max pooling: ``pool.py`` (the tiled views), shared with the GPU.
Loss (``softmax_xent``, ``softmax_xent_backward``)
    The forward pass finishes the gradient, softmax - one_hot (0 on ignored
    pixels), in place in the exp buffer; backward only scales it.
Buffers: temporaries of megabytes come from ``BUFFERS``, which hands out an
    array again once nothing refers to it any more; that saves the page faults
    of fresh memory (about a third of the time of a product that fills it).
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np

from ..nn.im2col import conv_output_size
from .pool import max_pool2d, max_pool2d_backward  # noqa: F401  (the accelerated pooling)
from .shared import channels_first, pointwise, pointwise_input_grad, weight_grad_product

STREAM_BYTES = 256 * 1024  # one image's patches at least this large ...
STREAM_CHANNELS = 32  # ... and at most this many output channels: loop over images
CHUNK_BYTES = 1024 * 1024  # ... in chunks of output rows whose patches take about this much


class Buffers:
    """Scratch arrays handed out again once no array refers to them any more.

    ``take(shape, dtype)`` returns a C-contiguous array with garbage in it. The
    pool keeps every array it made; one is free when the pool holds the only
    reference (views of it keep it busy, as they refer to it). Free arrays above
    ``keep_bytes`` in all are let go, the oldest first.
    """

    def __init__(self, keep_bytes: int = 256 * 2**20):
        self.keep_bytes = keep_bytes
        self._arrays = []

    def take(self, shape, dtype):
        dtype = np.dtype(dtype)
        size = int(np.prod(shape))
        for k in range(len(self._arrays)):
            a = self._arrays[k]
            # free: referred to only by the list, `a` and getrefcount's argument
            if a.size == size and a.dtype == dtype and sys.getrefcount(a) == 3:
                self._arrays.append(self._arrays.pop(k))  # most recently used last
                return a.reshape(shape)
        a = np.empty(size, dtype=dtype)
        self._arrays.append(a)
        self._trim()
        return a.reshape(shape)

    def _trim(self) -> None:
        free = [a for a in self._arrays if sys.getrefcount(a) == 3]
        extra = sum(a.nbytes for a in free) - self.keep_bytes
        for a in free:
            if extra <= 0:
                break
            extra -= a.nbytes
            self._arrays = [b for b in self._arrays if b is not a]


BUFFERS = Buffers()


def _padded(x, p: int):
    """x (N, C, H, W) -> (N, C, H + 2p, W + 2p), zero border (x itself when p == 0)."""
    if p == 0:
        return x
    n, c, h, w = x.shape
    out = np.empty((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype)
    out[:, :, :p] = 0
    out[:, :, p + h :] = 0
    out[:, :, p : p + h, :p] = 0
    out[:, :, p : p + h, p + w :] = 0
    out[:, :, p : p + h, p : p + w] = x
    return out


def _gather(img, col, kh: int, kw: int, s: int) -> None:
    """im2col of a padded img (..., Hp, Wp) into col (..., kh, kw, out_h, out_w)."""
    out_h, out_w = col.shape[-2:]
    for i in range(kh):
        for j in range(kw):
            col[..., i, j, :, :] = img[..., i : i + s * out_h : s, j : j + s * out_w : s]


def _scatter_add(col, img, kh: int, kw: int, s: int) -> None:
    """col2im: add col (..., kh, kw, out_h, out_w) into the padded img (..., Hp, Wp)."""
    out_h, out_w = col.shape[-2:]
    for i in range(kh):
        for j in range(kw):
            img[..., i : i + s * out_h : s, j : j + s * out_w : s] += col[..., i, j, :, :]


def _row_chunks(k: int, out_h: int, out_w: int, itemsize: int):
    """Slices of output rows whose patches (k values per pixel) take about CHUNK_BYTES."""
    rows = max(1, CHUNK_BYTES // (k * out_w * itemsize))
    return [slice(r, min(r + rows, out_h)) for r in range(0, out_h, rows)]


def _input_rows(rows: slice, kh: int, s: int) -> slice:
    """The padded input rows that output rows ``rows`` read."""
    return slice(rows.start * s, (rows.stop - 1) * s + kh)


class Streamed(NamedTuple):
    """Saved by ``conv2d`` on large maps: the padded input, to gather patches again."""

    xpad: np.ndarray  # (N, C, H + 2p, W + 2p)
    kh: int
    kw: int
    stride: int


def _streams(o, c, kh, kw, out_h, out_w, dtype) -> bool:
    """Loop over images: their patches are large, and with few output channels the
    product is memory-bound anyway, so smaller products lose nothing."""
    size = c * kh * kw * out_h * out_w * np.dtype(dtype).itemsize
    return o <= STREAM_CHANNELS and size >= STREAM_BYTES


def conv2d(x, weight, stride: int, padding: int):
    """As ``nn.conv.conv2d``: x (N, C, H, W), weight (O, C, kh, kw) -> y, saved.

    saved: (N, K, P) for 1x1 kernels (x itself), ``Streamed`` on large maps,
    else the patches (K, N*P) in the batch-major layout.
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    out_h = conv_output_size(h, kh, stride, padding)
    out_w = conv_output_size(w, kw, stride, padding)
    w2 = weight.reshape(o, -1)
    if pointwise(kh, kw, stride, padding):
        col = x.reshape(n, c, h * w)
        return (w2 @ col).reshape(n, o, out_h, out_w), col
    xpad = _padded(x, padding)
    p = out_h * out_w
    if _streams(o, c, kh, kw, out_h, out_w, x.dtype):
        y = np.empty((n, o, out_h, out_w), dtype=np.result_type(x, weight))
        chunks = _row_chunks(c * kh * kw, out_h, out_w, x.itemsize)
        buf = BUFFERS.take(c * kh * kw * (chunks[0].stop - chunks[0].start) * out_w, x.dtype)
        for i in range(n):
            for rows in chunks:
                r = rows.stop - rows.start
                col = buf[: c * kh * kw * r * out_w].reshape(c, kh, kw, r, out_w)
                _gather(xpad[i][:, _input_rows(rows, kh, stride)], col, kh, kw, stride)
                out = y[i, :, rows].reshape(o, r * out_w)
                np.matmul(w2, col.reshape(-1, r * out_w), out=out)
        return y, Streamed(xpad, kh, kw, stride)
    col = BUFFERS.take((c, kh, kw, n, out_h, out_w), x.dtype)
    _gather(xpad.transpose(1, 0, 2, 3), col.transpose(0, 3, 1, 2, 4, 5), kh, kw, stride)
    col = col.reshape(c * kh * kw, n * p)
    y = np.ascontiguousarray((w2 @ col).reshape(o, n, p).transpose(1, 0, 2))
    return y.reshape(n, o, out_h, out_w), col


def conv2d_weight_grad(saved, dy):
    """As ``nn.conv.conv2d_weight_grad``: dW (O, K) from what ``conv2d`` saved and dy."""
    n, o = dy.shape[:2]
    if isinstance(saved, Streamed):
        xpad, kh, kw, s = saved
        c = xpad.shape[1]
        out_h, out_w = dy.shape[2:]
        chunks = _row_chunks(c * kh * kw, out_h, out_w, xpad.itemsize)
        buf = BUFFERS.take(c * kh * kw * (chunks[0].stop - chunks[0].start) * out_w, xpad.dtype)
        dw = np.zeros((c * kh * kw, o), dtype=np.result_type(xpad, dy))
        for i in range(n):
            for rows in chunks:
                r = rows.stop - rows.start
                col = buf[: c * kh * kw * r * out_w].reshape(c, kh, kw, r, out_w)
                _gather(xpad[i][:, _input_rows(rows, kh, s)], col, kh, kw, s)
                # (K, P) @ (P, O): BLAS is faster with the long axis contracted this way round
                dw += col.reshape(-1, r * out_w) @ dy[i, :, rows].reshape(o, -1).T
        return dw.T
    return weight_grad_product(saved, dy)


def conv2d_input_grad(dy, weight, h: int, w: int, stride: int, padding: int):
    """As ``nn.conv.conv2d_input_grad``: dy (N, O, out_h, out_w) -> dx (N, C, h, w)."""
    n, o, out_h, out_w = dy.shape
    _, c, kh, kw = weight.shape
    w_t = weight.reshape(o, -1).T  # (K, O)
    if pointwise(kh, kw, stride, padding):
        return pointwise_input_grad(dy, weight, h, w)
    dtype = np.result_type(weight, dy)
    hp = max(h + 2 * padding, stride * (out_h - 1) + kh)
    wp = max(w + 2 * padding, stride * (out_w - 1) + kw)
    img = np.zeros((n, c, hp, wp), dtype=dtype)
    p = out_h * out_w
    if _streams(o, c, kh, kw, out_h, out_w, dtype):
        chunks = _row_chunks(c * kh * kw, out_h, out_w, np.dtype(dtype).itemsize)
        buf = BUFFERS.take(c * kh * kw * (chunks[0].stop - chunks[0].start) * out_w, dtype)
        for i in range(n):
            for rows in chunks:
                r = rows.stop - rows.start
                dcol = buf[: c * kh * kw * r * out_w].reshape(c, kh, kw, r, out_w)
                np.matmul(w_t, dy[i, :, rows].reshape(o, -1), out=dcol.reshape(-1, r * out_w))
                _scatter_add(dcol, img[i][:, _input_rows(rows, kh, stride)], kh, kw, stride)
    else:
        dcol = BUFFERS.take((c * kh * kw, n * p), dtype)
        np.matmul(w_t, channels_first(dy), out=dcol)
        dcol = dcol.reshape(c, kh, kw, n, out_h, out_w).transpose(0, 3, 1, 2, 4, 5)
        _scatter_add(dcol, img.transpose(1, 0, 2, 3), kh, kw, stride)
    return img[:, :, padding : padding + h, padding : padding + w]


# ------------------------------------------------------------ transposed convolution
class SubPixel(NamedTuple):
    """Saved by ``conv_transpose2d``: the input's m x m windows, and the geometry."""

    x2: np.ndarray  # (N*Hb*Wb, I*m*m): row (n, R, S), column (c, a, b) = x[n, c, R-a, S-b]
    x_shape: tuple  # (N, I, H, W)
    m: int  # windows of m x m input pixels; the kernel is zero-padded to m * stride


def _phase_weight(weight, s: int, m: int):
    """weight (I, O, k, k) -> W2 (I*m*m, O*s*s): row (c, a, b), column (o, u, v) holds
    weight[c, o, a*s + u, b*s + v] (zero where that is beyond k)."""
    i_, o, k, _ = weight.shape
    if m * s != k:
        full = np.zeros((i_, o, m * s, m * s), dtype=weight.dtype)
        full[:, :, :k, :k] = weight
        weight = full
    w6 = weight.reshape(i_, o, m, s, m, s)  # (c, o, a, u, b, v)
    return w6.transpose(0, 2, 4, 1, 3, 5).reshape(i_ * m * m, o * s * s)


def conv_transpose2d(x, weight, stride: int, padding: int):
    """As ``nn.conv_transpose.conv_transpose2d``: x (N, I, H, W) -> y (N, O, out_h, out_w).

    y_full[n, o, R*s + u, S*s + v] = sum over c, a, b of x[n, c, R-a, S-b] *
    weight[c, o, a*s + u, b*s + v], for blocks R < H + m - 1; y is y_full cropped by
    the padding to the output size.
    """
    n, ci, h, w = x.shape
    k, s = weight.shape[2], stride
    o = weight.shape[1]
    m = -(-k // s)
    hb, wb = h + m - 1, w + m - 1
    xpad = _padded(x, m - 1)
    x2 = np.empty((n, hb, wb, ci, m, m), dtype=x.dtype)
    for a in range(m):
        for b in range(m):
            window = xpad[:, :, m - 1 - a : m - 1 - a + hb, m - 1 - b : m - 1 - b + wb]
            x2[..., a, b] = window.transpose(0, 2, 3, 1)
    x2 = x2.reshape(n * hb * wb, ci * m * m)
    y2 = BUFFERS.take((n * hb * wb, o * s * s), np.result_type(x, weight))
    np.matmul(x2, _phase_weight(weight, s, m), out=y2)
    full = np.empty((n, o, hb * s, wb * s), dtype=y2.dtype)
    full.reshape(n, o, hb, s, wb, s)[...] = y2.reshape(n, hb, wb, o, s, s).transpose(
        0, 3, 1, 4, 2, 5
    )
    out_h, out_w = (h - 1) * s - 2 * padding + k, (w - 1) * s - 2 * padding + k
    y = full[:, :, padding : padding + out_h, padding : padding + out_w]
    return y, SubPixel(x2, x.shape, m)


def conv_transpose2d_backward(saved, dy, weight, stride: int, padding: int, weight_grad: bool):
    """As ``nn.conv_transpose.conv_transpose2d_backward``: -> dx (N, I, H, W), dW or None."""
    x2, (n, ci, h, w), m = saved
    k, s = weight.shape[2], stride
    o = weight.shape[1]
    hb, wb = h + m - 1, w + m - 1
    out_h, out_w = dy.shape[2:]
    if padding == 0 and (out_h, out_w) == (hb * s, wb * s):
        full = dy
    else:  # the rows and columns the padding (or a short kernel) cut off get no gradient
        full = np.zeros((n, o, hb * s, wb * s), dtype=dy.dtype)
        full[:, :, padding : padding + out_h, padding : padding + out_w] = dy
    dy2 = BUFFERS.take((n, hb, wb, o, s, s), dy.dtype)
    dy2[...] = full.reshape(n, o, hb, s, wb, s).transpose(0, 2, 4, 1, 3, 5)
    dy2 = dy2.reshape(n * hb * wb, o * s * s)
    w2 = _phase_weight(weight, s, m)
    dx2 = (dy2 @ w2.T).reshape(n, hb, wb, ci, m, m)
    dx = np.zeros((n, h, w, ci), dtype=dx2.dtype)
    for a in range(m):
        for b in range(m):
            dx += dx2[:, a : a + h, b : b + w, :, a, b]
    dx = np.ascontiguousarray(dx.transpose(0, 3, 1, 2))
    if not weight_grad:
        return dx, None
    dw2 = (x2.T @ dy2).reshape(ci, m, m, o, s, s).transpose(0, 3, 1, 4, 2, 5)
    dw = dw2.reshape(ci, o, m * s, m * s)[:, :, :k, :k]
    return dx, np.ascontiguousarray(dw)


# ------------------------------------------------------------------------------ loss
def softmax_xent(scores, labels, ignore_index: int, counted):
    """As ``nn.loss.softmax_xent``, but what it keeps is the finished gradient:
    (softmax - one_hot(label)) on counted pixels, 0 elsewhere, (N, C, H, W)."""
    index = np.where(counted, labels, 0)[:, None].astype(np.intp)  # (N, 1, H, W)
    grad = scores - scores.max(axis=1, keepdims=True)  # shifted; becomes the gradient
    picked = np.take_along_axis(grad, index, axis=1)[:, 0]
    np.exp(grad, out=grad)
    sum_exp = grad.sum(axis=1)
    pixel_loss = (np.log(sum_exp) - picked) * counted
    grad *= (counted / sum_exp).astype(grad.dtype)[:, None]  # softmax, 0 where not counted
    hit = np.take_along_axis(grad, index, axis=1)
    np.put_along_axis(grad, index, hit - counted[:, None], axis=1)  # minus the one-hot
    return pixel_loss, grad


def softmax_xent_backward(grad, labels, ignore_index: int, scale: float):
    """dscores = the gradient ``softmax_xent`` finished, times ``scale``."""
    return grad * grad.dtype.type(scale)
