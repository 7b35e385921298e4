"""What the NumPy and CuPy accelerated paths share: the 1x1 test and the batch-major
layout (written against ``xp``), and the GPU's 1x1 and batch-major products (the CPU
path computes those in pieces of images, ``cpu._weight_grad_product``)."""

from __future__ import annotations

from ..backend import get_array_module


def pointwise(kh: int, kw: int, stride: int, padding: int) -> bool:
    """A 1x1 convolution without stride or padding: the image is its own patch matrix."""
    return kh == 1 and kw == 1 and stride == 1 and padding == 0


def channels_first(a):
    """(N, O, H, W) -> (O, N*H*W), a copy: the batch joined to the pixels."""
    return get_array_module(a).ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(a.shape[1], -1)


def weight_grad_product(col, dy):
    """dW (O, K) from the patches and dy (N, O, out_h, out_w).

    col: (N, K, P) on the 1x1 shortcut (x itself), else the batch-major (K, N*P).
    Computed as its transpose, col @ dy^T (K, O): BLAS is faster with the long
    N*P axis contracted this way round.
    """
    n, o = dy.shape[:2]
    if col.ndim == 3:  # 1x1: a batch of products, then the sum over it
        return (col @ dy.reshape(n, o, -1).transpose(0, 2, 1)).sum(axis=0).T
    return (col @ channels_first(dy).T).T


def pointwise_input_grad(dy, weight, h: int, w: int):
    """dx (N, C, h, w) = W^T dy for a 1x1 convolution: no col2im needed."""
    n, o = dy.shape[:2]
    c = weight.shape[1]
    return (weight.reshape(o, -1).T @ dy.reshape(n, o, -1)).reshape(n, c, h, w)
