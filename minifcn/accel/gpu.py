"""The accelerated path on CuPy: the layers with the custom CUDA kernels of ``cuda_kernels.py``.

Same names, arguments and results as the plain functions in ``minifcn/nn/``.

* Convolution: im2col is one kernel launch (a thread per patch entry), writing
  the batch-major layout (C, kh, kw, N, out_h, out_w), so the whole batch is ONE
  matrix product (O, K) @ (K, N*P); col2im is a gather (a thread per image
  pixel sums the entries copied from it: no atomics, deterministic).
* Transposed convolution: the convolution's functions with the roles swapped,
  as on the plain path, on these kernels.
* Max pooling: ``pool.py``'s strided views.
* Loss: one kernel computes each pixel's log-sum-exp and loss; backward
  recomputes the softmax from the stored log-sum-exp in one elementwise kernel.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import cupy_module
from ..nn.im2col import conv_output_size
from .cuda_kernels import (
    col2im_gpu,
    im2col_gpu,
    softmax_xent_backward_gpu,
    softmax_xent_forward_gpu,
)
from .pool import max_pool2d, max_pool2d_backward  # noqa: F401  (the accelerated pooling)
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


class XentSaved(NamedTuple):
    scores: object  # (N, C, H, W)
    lse: object  # (N, H, W), log-sum-exp over classes


def softmax_xent(scores, labels, ignore_index: int, counted):
    """As ``nn.loss.softmax_xent``; the kernel checks the labels itself (``counted`` unused)."""
    lse, pixel_loss = softmax_xent_forward_gpu(scores, labels, ignore_index)
    return pixel_loss, XentSaved(scores, lse)


def softmax_xent_backward(saved, labels, ignore_index: int, scale: float):
    """As ``nn.loss.softmax_xent_backward``, recomputing the softmax from the log-sum-exp."""
    return softmax_xent_backward_gpu(saved.scores, saved.lse, labels, ignore_index, scale)
