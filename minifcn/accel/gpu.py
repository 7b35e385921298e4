"""The accelerated path on CuPy: the layers with the custom CUDA kernels of ``cuda_kernels.py``.

Same names, arguments and results as the plain functions in ``minifcn/nn/``.

* Convolution: im2col is one kernel launch (a thread per patch entry), writing
  the batch-major layout (C, kh, kw, N, out_h, out_w), so the whole batch is ONE
  matrix product (O, K) @ (K, N*P); col2im is a gather (a thread per image
  pixel sums the entries copied from it: no atomics, deterministic).
* Transposed convolution: the convolution's functions with the roles swapped,
  as on the plain path, on these kernels.
* Max pooling: one kernel finds each window's maximum and its offset; the
  backward is a gather (a thread per input pixel adds what the windows it won
  receive).
* Loss: one kernel computes each pixel's log-sum-exp and loss, a second sums
  them in chunks with the counted and out-of-range pixels, so one copy to the
  host brings everything the layer needs; backward recomputes the softmax from
  the stored log-sum-exp in one elementwise kernel.

Beyond the shared contract (``LayerOps``) this module offers fused forms that
a layer uses when its accelerated module has them: ``conv2d_bias`` (the product's
regrouping by image and the bias in one pass) with ``conv2d_backward`` (both
parameter gradients from one product, as the patch matrix carries a row of
ones), ``relu`` / ``relu_backward`` and ``dropout`` / ``dropout_backward`` (one kernel
each way) and
``softmax_xent_totals``. On a GPU each array operation is a kernel launch with a
fixed cost of microseconds, so a small network's step is bounded by the number of
launches, not by arithmetic: these exist to issue fewer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import cupy_module
from ..nn.im2col import conv_output_size
from .cuda_kernels import (
    LABEL_DTYPES,
    SCORE_DTYPES,
    accumulate_wb_gpu,
    bias_nop_gpu,
    col2im_gpu,
    im2col_gpu,
    max_pool_backward_gpu,
    max_pool_gpu,
    relu_backward_gpu,
    relu_gpu,
    scale_by_mask_gpu,
    softmax_xent_backward_gpu,
    softmax_xent_forward_gpu,
    xent_partials_gpu,
)
from .shared import channels_first, pointwise, pointwise_input_grad, weight_grad_product


def conv2d(x, weight, stride: int, padding: int):
    """As ``nn.conv.conv2d``; saved: the patches (K, N*P), or x as (N, K, P) for 1x1."""
    cp = cupy_module()
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    out_h = conv_output_size(h, kh, stride, padding)
    out_w = conv_output_size(w, kw, stride, padding)
    w2 = weight.reshape(o, -1)
    if pointwise(kh, kw, stride, padding):
        col = x.reshape(n, c, h * w)
        return (w2 @ col).reshape(n, o, out_h, out_w), col
    col = cp.empty((c, kh, kw, n, out_h, out_w), dtype=x.dtype)
    im2col_gpu(x, kh, kw, stride, padding, col, layout="cn")
    col = col.reshape(c * kh * kw, n * out_h * out_w)
    y = cp.ascontiguousarray((w2 @ col).reshape(o, n, -1).transpose(1, 0, 2))
    return y.reshape(n, o, out_h, out_w), col


def conv2d_bias(x, weight, bias, stride: int, padding: int):
    """``conv2d`` plus the bias (O,): y, and the patches with a row of ones (K + 1, N*P)
    (x as (N, K, P) on the 1x1 shortcut) for ``conv2d_backward``."""
    cp = cupy_module()
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    if pointwise(kh, kw, stride, padding):
        y, col = conv2d(x, weight, stride, padding)
        y += bias.reshape(1, -1, 1, 1)
        return y, col
    out_h = conv_output_size(h, kh, stride, padding)
    out_w = conv_output_size(w, kw, stride, padding)
    k, pixels = c * kh * kw, out_h * out_w
    col = cp.empty((k + 1, n * pixels), dtype=x.dtype)
    im2col_gpu(x, kh, kw, stride, padding, col, layout="cn", out_size=(out_h, out_w))
    y = bias_nop_gpu(weight.reshape(o, -1) @ col[:k], bias, n, pixels)
    return y.reshape(n, o, out_h, out_w), col


def conv2d_backward(col, dy, weight, weight_grad, bias_grad, h, w, stride, padding, input_grad):
    """The whole backward of a convolution with bias after ``conv2d_bias``: adds into
    ``weight_grad`` (O, C, kh, kw) and ``bias_grad`` (O,) (either may be None, frozen)
    and returns dx (N, C, h, w), or None without ``input_grad``.

    Both parameter gradients come from one product, dy (O, N*P) @ col^T (N*P, K + 1),
    whose last column (from the row of ones) is the bias gradient, and one kernel
    adds them in."""
    o = dy.shape[1]
    if col.ndim == 3:  # the 1x1 shortcut
        if weight_grad is not None:
            weight_grad += weight_grad_product(col, dy).reshape(weight_grad.shape)
        if bias_grad is not None:
            bias_grad += dy.sum(axis=(0, 2, 3))
        return pointwise_input_grad(dy, weight, h, w) if input_grad else None
    dy_t = channels_first(dy)  # (O, N*P)
    if weight_grad is not None and bias_grad is not None:
        accumulate_wb_gpu(dy_t @ col.T, weight_grad.reshape(o, -1), bias_grad)
    elif weight_grad is not None:
        weight_grad += (dy_t @ col[:-1].T).reshape(weight_grad.shape)
    elif bias_grad is not None:
        bias_grad += dy_t.sum(axis=1)
    if not input_grad:
        return None
    n, _, out_h, out_w = dy.shape
    _, c, kh, kw = weight.shape
    dcol = (weight.reshape(o, -1).T @ dy_t).reshape(c, kh, kw, n, out_h, out_w)
    return col2im_gpu(dcol, h, w, stride, padding, layout="cn")


def conv2d_weight_grad(col, dy):
    """As ``nn.conv.conv2d_weight_grad``: dW (O, K)."""
    return weight_grad_product(col, dy)


def conv2d_input_grad(dy, weight, h: int, w: int, stride: int, padding: int):
    """As ``nn.conv.conv2d_input_grad``: dy (N, O, out_h, out_w) -> dx (N, C, h, w)."""
    n, o, out_h, out_w = dy.shape
    _, c, kh, kw = weight.shape
    w_t = weight.reshape(o, -1).T  # (K, O)
    if pointwise(kh, kw, stride, padding):
        return pointwise_input_grad(dy, weight, h, w)
    dcol = (w_t @ channels_first(dy)).reshape(c, kh, kw, n, out_h, out_w)
    return col2im_gpu(dcol, h, w, stride, padding, layout="cn")


def conv_transpose2d(x, weight, stride: int, padding: int):
    """As ``nn.conv_transpose.conv_transpose2d``: y, and x for backward."""
    k = weight.shape[2]
    h = (x.shape[2] - 1) * stride - 2 * padding + k
    w = (x.shape[3] - 1) * stride - 2 * padding + k
    return conv2d_input_grad(x, weight, h, w, stride, padding), x


def conv_transpose2d_backward(x, dy, weight, stride: int, padding: int, weight_grad: bool):
    """As ``nn.conv_transpose.conv_transpose2d_backward``: dx, and dW or None."""
    dx, col = conv2d(dy, weight, stride, padding)
    dw = conv2d_weight_grad(col, x).reshape(weight.shape) if weight_grad else None
    return dx, dw


def max_pool2d(x, k: int, s: int, p: int, out_h: int, out_w: int):
    """As ``nn.pool.max_pool2d``, in one kernel; arg is int32."""
    return max_pool_gpu(x, k, s, p, out_h, out_w)


def max_pool2d_backward(dy, arg, x_shape, k: int, s: int, p: int):
    """As ``nn.pool.max_pool2d_backward``, as a gather (one kernel)."""
    return max_pool_backward_gpu(dy, arg, x_shape, k, s, p)


def relu(x):
    """y = max(x, 0) as ``nn.relu.relu`` (x * (x > 0)), and the mask for backward."""
    return relu_gpu(x)


def relu_backward(dy, mask):
    """dx = dy where x > 0, else 0."""
    return relu_backward_gpu(dy, mask)


class DropoutMask(NamedTuple):
    keep: object  # (x's shape) uint8 on the device
    scale: float  # 1 / (1 - p)


def dropout(x, keep, scale: float):
    """As ``nn.dropout.dropout``: one copy of the keep mask (1 byte an element), one kernel."""
    cp = cupy_module()
    keep = cp.asarray(keep.view(np.uint8))
    return scale_by_mask_gpu(x, keep, scale), DropoutMask(keep, scale)


def dropout_backward(dy, mask):
    """As ``nn.dropout.dropout_backward``, in one kernel."""
    return scale_by_mask_gpu(dy, mask.keep, mask.scale)


class XentSaved(NamedTuple):
    scores: object  # (N, C, H, W), in a type the kernels take
    lse: object  # (N, H, W), log-sum-exp over classes
    dtype: object = None  # the caller's score type when it was converted (float16)


def kernel_scores(scores):
    """``scores`` in a type the loss kernels are compiled for: float16 (or any other
    float) is computed in float32, converted once; results go back to its type."""
    if np.dtype(scores.dtype) in SCORE_DTYPES or np.dtype(scores.dtype).kind != "f":
        return scores, None
    return scores.astype(np.float32), scores.dtype


def kernel_labels(labels):
    """``labels`` in a type the loss kernels are compiled for (uint8, int32, int64): any
    other integer type (int8, int16, uint16, uint32, uint64) is converted once, to int32
    where it holds every value of the type, else int64, as the plain path accepts them all."""
    dtype = np.dtype(labels.dtype)
    if dtype in LABEL_DTYPES or dtype.kind not in "iu":
        return labels
    return labels.astype(np.int32 if np.can_cast(dtype, np.int32) else np.int64)


def softmax_xent(scores, labels, ignore_index: int, counted):
    """As ``nn.loss.softmax_xent``; the kernel checks the labels itself (``counted`` unused)."""
    labels = kernel_labels(labels)
    scores, dtype = kernel_scores(scores)
    lse, pixel_loss, _ = softmax_xent_forward_gpu(scores, labels, ignore_index)
    if dtype is not None:
        pixel_loss = pixel_loss.astype(dtype)
    return pixel_loss, XentSaved(scores, lse, dtype)


def softmax_xent_totals(scores, labels, ignore_index: int):
    """The loss's forward with its sums on the device, in two kernels.

    Returns (partial, saved): partial (chunks, 3) float64 holds each chunk of pixels'
    loss sum, counted pixels and out-of-range labels (the layer copies it to the host
    once and adds the rows up there, in float64: deterministic), saved as
    ``softmax_xent``'s."""
    labels = kernel_labels(labels)
    scores, dtype = kernel_scores(scores)
    lse, pixel_loss, status = softmax_xent_forward_gpu(scores, labels, ignore_index)
    return xent_partials_gpu(pixel_loss, status), XentSaved(scores, lse, dtype)


def softmax_xent_backward(saved, labels, ignore_index: int, scale: float):
    """As ``nn.loss.softmax_xent_backward``, recomputing the softmax from the log-sum-exp."""
    labels = kernel_labels(labels)
    grad = softmax_xent_backward_gpu(saved.scores, saved.lse, labels, ignore_index, scale)
    return grad if saved.dtype is None else grad.astype(saved.dtype)
