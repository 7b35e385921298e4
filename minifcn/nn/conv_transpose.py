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
from .crop import crop2d_backward
from .init import as_generator, bilinear_weight, kaiming_normal
from .module import Module
from .parameter import Parameter


def transposed_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """(size - 1) * stride - 2 * padding + kernel."""
    return (size - 1) * stride - 2 * padding + kernel


def read_span(start: int, length: int, size: int, kernel: int, stride: int) -> tuple:
    """The block of input rows [first, stop) whose transposed convolution (unpadded)
    covers output rows [start, start + length) and holds every input row they read.

    Rows are counted without padding (row 0 is the first of the uncropped output).
    Input row i reaches output rows [i*stride, i*stride + kernel); output row Y sums
    the input rows i with i*stride <= Y < i*stride + kernel. The block's output starts
    at first*stride, so first <= start // stride as well (a kernel shorter than the
    stride leaves output rows that read no input), and ends at (stop - 1)*stride + kernel.
    """
    first = max(0, min(-(-(start - kernel + 1) // stride), start // stride))
    last = start + length - 1
    stop = max(last // stride + 1, -(-(last + 1 - kernel) // stride) + 1)
    return first, min(size, stop)


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
    window: object = None  # WindowRun, when forward computed a window of the output


class WindowRun(NamedTuple):
    """How ``ConvTranspose2d.forward`` computed a window: on the input's rows and columns
    from ``corner`` on (``x_shape`` the whole input's), giving a block of output of
    ``block_shape`` whose part at ``offset`` is the window."""

    x_shape: tuple
    corner: tuple  # (row, column) of the input block
    block_shape: tuple
    offset: tuple  # (row, column) of the window in the block


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

    def forward(self, x, window=None):
        """x (N, I, H, W) -> y (N, O, out_h, out_w).

        ``window`` = (top, left, height, width): only that part of y, computed from the
        block of input rows and columns it reads (``read_span``); the rest of y is never
        computed. A crop that keeps a window of the output thus costs nothing of what
        it drops (FCN-8s keeps about a third of upscore8's output on a small image).
        ``backward`` then takes the window's gradient.
        """
        check_nchw(x, "ConvTranspose2d", self.in_channels)
        check_float(x, "ConvTranspose2d")
        h, w = self.output_size(x.shape[2]), self.output_size(x.shape[3])
        if h < 1 or w < 1:
            raise ValueError(
                f"ConvTranspose2d: input {tuple(x.shape)} gives an empty output with "
                f"kernel {self.kernel_size}, stride {self.stride}, padding {self.padding}"
            )
        self._cache = None
        ops = ops_for(x, PLAIN)
        if window is None:
            y, saved = ops.conv_transpose2d(x, self.weight.data, self.stride, self.padding)
            run = None
        else:
            y, saved, run = self._window(ops, x, window, (h, w))
        if self.bias is not None:
            y += self.bias.data.reshape(1, -1, 1, 1)
        self._cache = ConvTransposeCache(ops, saved, run)
        return y

    def _window(self, ops, x, window, out_size):
        """The part ``window`` of the output: the transposed convolution, unpadded, of
        the input block the window reads, cut to the window."""
        top, left, height, width = window
        rows_fit = 0 <= top and 1 <= height and top + height <= out_size[0]
        if not (rows_fit and 0 <= left and 1 <= width and left + width <= out_size[1]):
            raise ValueError(
                f"ConvTranspose2d: window {tuple(window)} (top, left, height, width) is not "
                f"inside the output of size {out_size[0]}x{out_size[1]}"
            )
        k, s, p = self.kernel_size, self.stride, self.padding
        r0, r1 = read_span(top + p, height, x.shape[2], k, s)
        c0, c1 = read_span(left + p, width, x.shape[3], k, s)
        block, saved = ops.conv_transpose2d(x[:, :, r0:r1, c0:c1], self.weight.data, s, 0)
        oy, ox = top + p - r0 * s, left + p - c0 * s
        y = block[:, :, oy : oy + height, ox : ox + width]
        return y, saved, WindowRun(tuple(x.shape), (r0, c0), tuple(block.shape), (oy, ox))

    def backward(self, dy):
        """dy (N, O, out_h, out_w) (the window's, after a windowed forward) -> dx (N, I, H,
        W); adds into weight.grad (unless frozen)."""
        ops, saved, run = self.cached()
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += dy.sum(axis=(0, 2, 3))
        padding = self.padding
        if run is not None:  # the block's gradient: the window's, zeros around it
            dy, padding = crop2d_backward(dy, run.block_shape, *run.offset), 0
        dx, dw = ops.conv_transpose2d_backward(
            saved, dy, self.weight.data, self.stride, padding, self.weight.requires_grad
        )
        if dw is not None:
            self.weight.grad += dw
        if run is not None:  # the block's rows and columns of the input get its gradient
            dx = crop2d_backward(dx, run.x_shape, *run.corner)
        return dx

    def extra_repr(self) -> str:
        frozen = ", frozen" if not self.weight.requires_grad else ""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}{frozen}"
        )
