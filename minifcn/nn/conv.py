"""2-D convolution (``Conv2d``) with a hand-written backward pass.

The three functions below are the whole of the mathematics; ``ConvTranspose2d``
(in ``conv_transpose.py``) reuses them with the roles of forward and backward
swapped. The plain loop version of the same computation is in ``reference.py``.

Shapes: x (N, C, H, W); weight (O, C, kh, kw); y (N, O, out_h, out_w);
K = C*kh*kw (one patch); P = out_h*out_w (one image's output pixels).

The forward pass is im2col followed by one matrix product per image:
y[n] = W (O, K) @ col[n] (K, P). Differentiating that product gives the backward:

* input gradient: dcol[n] = W^T (K, O) @ dy[n] (O, P), then col2im adds each
  patch's gradient back onto the pixels it was copied from;
* weight gradient: dW = sum over n of dy[n] (O, P) @ col[n]^T (P, K).

``minifcn.accel`` computes the same three things faster (fewer copies than
im2col, reused buffers, CUDA kernels); ``Conv2d`` uses it unless the plain path is
selected (``MINIFCN_ACCEL=0``).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from ..dispatch import ops_for
from .checks import check_float, check_nchw
from .coords import CoordMap
from .im2col import col2im, conv_output_size, im2col
from .init import as_generator, kaiming_normal
from .module import Module
from .parameter import Parameter


def conv2d(x, weight, stride: int, padding: int):
    """Convolution without bias, as im2col followed by one matrix product per image.

    Args:
        x: (N, C, H, W).
        weight: (O, C, kh, kw).
    Returns:
        y: (N, O, out_h, out_w).
        col: (N, K, P), the patches, kept for the weight gradient.
    """
    n = x.shape[0]
    o, c, kh, kw = weight.shape
    col = im2col(x, kh, kw, stride, padding)  # (N, C, kh, kw, out_h, out_w)
    out_h, out_w = col.shape[4:]
    col = col.reshape(n, c * kh * kw, out_h * out_w)  # (N, K, P)
    y = weight.reshape(o, -1) @ col  # (O, K) @ (N, K, P) -> (N, O, P)
    return y.reshape(n, o, out_h, out_w), col


def conv2d_input_grad(dy, weight, h: int, w: int, stride: int, padding: int):
    """The adjoint of ``conv2d`` with respect to its input.

    Args:
        dy: (N, O, out_h, out_w).
        weight: (O, C, kh, kw).
        h, w: the input's spatial size.
    Returns:
        dx: (N, C, h, w) = col2im(W^T @ dy).
    """
    n, o, out_h, out_w = dy.shape
    _, c, kh, kw = weight.shape
    dcol = weight.reshape(o, -1).T @ dy.reshape(n, o, -1)  # (K, O) @ (N, O, P) -> (N, K, P)
    return col2im(dcol.reshape(n, c, kh, kw, out_h, out_w), h, w, stride, padding)


def conv2d_weight_grad(col, dy):
    """Gradient of ``conv2d`` with respect to its weight.

    Args:
        col: (N, K, P), the patches ``conv2d`` returned.
        dy: (N, O, out_h, out_w).
    Returns:
        dW: (O, K) = the sum over images of dy[n] (O, P) @ col[n]^T (P, K)
        (reshape to (O, C, kh, kw)).
    """
    n, o = dy.shape[:2]
    return (dy.reshape(n, o, -1) @ col.transpose(0, 2, 1)).sum(axis=0)


# The plain functions of a Conv2d (minifcn.dispatch chooses between them and their twins).
PLAIN = SimpleNamespace(
    conv2d=conv2d, conv2d_input_grad=conv2d_input_grad, conv2d_weight_grad=conv2d_weight_grad
)


class ConvCache(NamedTuple):
    """What ``Conv2d.forward`` keeps for ``backward``."""

    ops: object  # the functions that ran forward (PLAIN or an accelerated module)
    x_shape: tuple  # (N, C, H, W)
    col: object  # the patches, in the layout ``ops`` uses
    fused: bool = False  # whether ops.conv2d_backward is the backward (after ops.conv2d_bias)


class Conv2d(Module):
    """y = W * x + b, PyTorch's ``nn.Conv2d`` (square kernel, stride and padding).

    Parameters:
        weight: (out_channels, in_channels, kernel_size, kernel_size), He-normal init.
        bias: (out_channels,), zeros (absent when ``bias=False``).

    ``forward(x (N, C_in, H, W)) -> (N, C_out, out_h, out_w)`` with
    out = floor((H + 2*padding - kernel_size) / stride) + 1.
    ``backward(dy (N, C_out, out_h, out_w)) -> dx (N, C_in, H, W)``, adding into
    ``weight.grad`` and ``bias.grad``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        rng=None,
        dtype=np.float32,
    ):
        if min(in_channels, out_channels, kernel_size, stride) < 1 or padding < 0:
            raise ValueError(
                f"Conv2d: channels, kernel_size and stride must be >= 1 and padding >= 0, got "
                f"in={in_channels}, out={out_channels}, k={kernel_size}, s={stride}, p={padding}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = Parameter(kaiming_normal(shape, fan_in, as_generator(rng), dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self._cache = None

    def output_size(self, size: int) -> int:
        """Output length along one axis for an input of ``size``."""
        return conv_output_size(size, self.kernel_size, self.stride, self.padding)

    def coord_map(self) -> CoordMap:
        """Output pixel -> the centre of its input window (``CoordMap.window``)."""
        return CoordMap.window(self.kernel_size, self.stride, self.padding)

    def forward(self, x):
        check_nchw(x, "Conv2d", self.in_channels)
        check_float(x, "Conv2d")
        k, p = self.kernel_size, self.padding
        if x.shape[2] + 2 * p < k or x.shape[3] + 2 * p < k:
            raise ValueError(
                f"Conv2d: kernel {k}x{k} is larger than the padded input "
                f"{x.shape[2] + 2 * p}x{x.shape[3] + 2 * p} (input {tuple(x.shape)}, padding {p})"
            )
        self._cache = None  # the previous call's patches can go (accel reuses their memory)
        ops = ops_for(x, PLAIN)
        # An accelerated path may offer the convolution and its bias as one fused step
        # (conv2d_bias), and conv2d_backward for its whole backward (where it keeps other
        # state than conv2d would, or computes the gradients side by side); same values.
        fused = self.bias is not None and hasattr(ops, "conv2d_bias")
        if fused:
            y, col = ops.conv2d_bias(x, self.weight.data, self.bias.data, self.stride, p)
        else:
            y, col = ops.conv2d(x, self.weight.data, self.stride, p)
            if self.bias is not None:
                y += self.bias.data.reshape(1, -1, 1, 1)
        self._cache = ConvCache(ops, x.shape, col, fused and hasattr(ops, "conv2d_backward"))
        return y

    def backward(self, dy, input_grad: bool = True):
        """dy (N, C_out, out_h, out_w) -> dx (N, C_in, H, W); adds into weight.grad, bias.grad.

        ``input_grad=False``: dx is not wanted (the layer reads the image), so it is
        not computed and None is returned.
        """
        ops, x_shape, col, fused = self.cached()
        if fused:
            return ops.conv2d_backward(
                col, dy, self.weight.data,
                self.weight.grad if self.weight.requires_grad else None,
                self.bias.grad if self.bias.requires_grad else None,
                *x_shape[2:], self.stride, self.padding, input_grad,
            )  # fmt: skip
        if self.weight.requires_grad:
            self.weight.grad += ops.conv2d_weight_grad(col, dy).reshape(self.weight.shape)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += dy.sum(axis=(0, 2, 3))
        if not input_grad:
            return None
        return ops.conv2d_input_grad(dy, self.weight.data, *x_shape[2:], self.stride, self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )


__all__ = ["Conv2d", "ConvCache", "conv2d", "conv2d_input_grad", "conv2d_weight_grad"]
