"""Transposed convolution (``ConvTranspose2d``): FCN's learnable upsampling.

A transposed convolution is the adjoint of a convolution: its forward pass is
a convolution's input gradient, and its input gradient is a convolution's
forward pass. So it is written here with the functions of ``conv.py``, the
roles swapped; the tests check <conv(x), y> = <x, conv_transpose(y)>.

Shapes: x (N, I, H, W); weight (I, O, k, k) (PyTorch's layout);
y (N, O, (H-1)*stride - 2*padding + k, (W-1)*stride - 2*padding + k).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from ..dispatch import ops_for
from .checks import check_float, check_nchw
from .conv import conv2d, conv2d_input_grad, conv2d_weight_grad
from .coords import CoordMap
from .init import as_generator, bilinear_weight, kaiming_normal
from .module import Module
from .parameter import Parameter


def transposed_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """(size - 1) * stride - 2 * padding + kernel."""
    return (size - 1) * stride - 2 * padding + kernel


def conv_transpose2d(x, weight, stride: int, padding: int):
    """x (N, I, H, W), weight (I, O, k, k) -> y (N, O, out_h, out_w), and x (kept for backward).

    A convolution with weight (I, O, k, k) maps O channels to I; its input
    gradient maps I channels back to O: that is this layer's forward.
    """
    h = transposed_output_size(x.shape[2], weight.shape[2], stride, padding)
    w = transposed_output_size(x.shape[3], weight.shape[3], stride, padding)
    return conv2d_input_grad(x, weight, h, w, stride, padding), x


def conv_transpose2d_backward(x, dy, weight, stride: int, padding: int, weight_grad: bool):
    """dy (N, O, out_h, out_w) -> dx (N, I, H, W) = conv2d(dy), and dW (I, O, k, k) or None.

    The patches of dy that give dx also give the weight gradient: it is the
    convolution's weight gradient with x in the role of the output gradient.
    """
    dx, col = conv2d(dy, weight, stride, padding)
    dw = conv2d_weight_grad(col, x).reshape(weight.shape) if weight_grad else None
    return dx, dw


# The plain functions of a ConvTranspose2d (minifcn.dispatch chooses between them and their twins).
PLAIN = SimpleNamespace(
    conv_transpose2d=conv_transpose2d, conv_transpose2d_backward=conv_transpose2d_backward
)


class ConvTransposeCache(NamedTuple):
    """What ``ConvTranspose2d.forward`` keeps for ``backward``."""

    ops: object  # the functions that ran forward (PLAIN or an accelerated module)
    saved: object  # what ops.conv_transpose2d returned for the backward (x on the plain path)


class ConvTranspose2d(Module):
    """PyTorch's ``nn.ConvTranspose2d`` (square kernel, stride and padding).

    Args:
        freeze: keep the weight fixed (no gradient, optimisers skip it), as the
            reference FCN does with its bilinear upsampling.
        init: "bilinear" (default when in == out channels: each channel is
            upsampled by bilinear interpolation) or "kaiming".

    Parameters:
        weight: (in_channels, out_channels, kernel_size, kernel_size).
        bias: (out_channels,), only when ``bias=True`` (FCN uses none).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
        freeze: bool = False,
        init: str | None = None,
        rng=None,
        dtype=np.float32,
    ):
        if min(in_channels, out_channels, kernel_size, stride) < 1 or padding < 0:
            raise ValueError(
                "ConvTranspose2d: channels, kernel_size and stride must be >= 1 and padding >= 0"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        init = init or ("bilinear" if in_channels == out_channels else "kaiming")
        shape = (in_channels, out_channels, kernel_size, kernel_size)
        if init == "bilinear":
            w = bilinear_weight(in_channels, out_channels, kernel_size, dtype)
        elif init == "kaiming":
            w = kaiming_normal(shape, in_channels, as_generator(rng), dtype)
        else:
            raise ValueError(f"ConvTranspose2d: init must be 'bilinear' or 'kaiming', got {init!r}")
        self.weight = Parameter(w, requires_grad=not freeze)
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self._cache = None

    def output_size(self, size: int) -> int:
        return transposed_output_size(size, self.kernel_size, self.stride, self.padding)

    def coord_map(self) -> CoordMap:
        """The inverse of the map of a conv with the same kernel, stride and padding."""
        return CoordMap.window(self.kernel_size, self.stride, self.padding).inverse()

    def forward(self, x):
        check_nchw(x, "ConvTranspose2d", self.in_channels)
        check_float(x, "ConvTranspose2d")
        h, w = self.output_size(x.shape[2]), self.output_size(x.shape[3])
        if h < 1 or w < 1:
            raise ValueError(
                f"ConvTranspose2d: input {tuple(x.shape)} gives an empty output with "
                f"kernel {self.kernel_size}, stride {self.stride}, padding {self.padding}"
            )
        ops = ops_for(x, PLAIN)
        y, saved = ops.conv_transpose2d(x, self.weight.data, self.stride, self.padding)
        if self.bias is not None:
            y += self.bias.data.reshape(1, -1, 1, 1)
        self._cache = ConvTransposeCache(ops, saved)
        return y

    def backward(self, dy):
        """dy (N, O, out_h, out_w) -> dx (N, I, H, W); adds into weight.grad (unless frozen)."""
        ops, saved = self.cached()
        dx, dw = ops.conv_transpose2d_backward(
            saved, dy, self.weight.data, self.stride, self.padding, self.weight.requires_grad
        )
        if dw is not None:
            self.weight.grad += dw
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += dy.sum(axis=(0, 2, 3))
        return dx

    def extra_repr(self) -> str:
        frozen = ", frozen" if not self.weight.requires_grad else ""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}{frozen}"
        )
