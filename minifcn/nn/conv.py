"""2-D convolution (``Conv2d``) with a hand-written backward pass.

The three functions below are the whole of the mathematics; ``ConvTranspose2d``
(in ``conv_transpose.py``) reuses them with the roles of forward and backward
swapped.

Shapes: x (N, C, H, W); weight (O, C, kh, kw); y (N, O, out_h, out_w);
K = C*kh*kw; P = out_h*out_w.

The plain loop version of the same computation is in ``reference.py``.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from .checks import check_float, check_nchw
from .im2col import col2im, col_shape, conv_output_size, im2col
from .init import as_generator, kaiming_normal
from .module import Module
from .parameter import Parameter

_SCRATCH = {}  # dtype -> flat NumPy buffer reused for short-lived patch gradients


def scratch(shape, dtype):
    """A reused NumPy buffer of ``shape`` for an array that dies within one call.

    A fresh NumPy array of tens of megabytes is a fresh mapping from the OS, and
    the first write to each of its pages costs a page fault (about a third of
    the time of a matrix product that fills it). The patch gradient ``dcol`` of
    ``conv2d_input_grad`` lives only until col2im has summed it, so one buffer,
    grown to the largest size seen, serves every layer. (CuPy's memory pool
    already reuses GPU memory, so this is NumPy only.)
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buf = _SCRATCH.get(dtype)
    if buf is None or buf.size < size:
        buf = _SCRATCH[dtype] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def _pointwise(kh: int, kw: int, stride: int, padding: int) -> bool:
    return kh == 1 and kw == 1 and stride == 1 and padding == 0


def _channels_first(a):
    """(N, O, H, W) -> (O, N*H*W), a copy: the batch joined to the pixels."""
    n, o = a.shape[:2]
    return get_array_module(a).ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(o, -1)


def conv2d(x, weight, stride: int, padding: int, col_out=None):
    """Convolution without bias, as im2col followed by one matrix multiply.

    The patches are gathered in im2col's "cn" layout, (K, N*P), so that for small
    images the whole batch is one product (O, K) @ (K, N*P) (much faster in BLAS
    than N products (O, K) @ (K, P) when P is small), transposed to NCHW after.
    For large images the N products, reading col through a strided view, are as
    fast and write NCHW directly. The weight gradient is always one product.
    The 1x1 fast path skips im2col: the image already is its own col, as (N, K, P).

    Args:
        x: (N, C, H, W).
        weight: (O, C, kh, kw).
        col_out: optional buffer for the patches, C-contiguous
            (C, kh, kw, N, out_h, out_w) (unused by the 1x1 fast path).
    Returns:
        y: (N, O, out_h, out_w), C-contiguous.
        col: the patches, kept for the weight gradient: (K, N*P), or (N, K, P)
            on the 1x1 fast path (where it is x itself, reshaped).
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    out_h = conv_output_size(h, kh, stride, padding)
    out_w = conv_output_size(w, kw, stride, padding)
    w2 = weight.reshape(o, -1)
    if _pointwise(kh, kw, stride, padding):
        col = x.reshape(n, c, h * w)
        y = w2 @ col  # (O, K) @ (N, K, P) -> (N, O, P): already NCHW
        return y.reshape(n, o, out_h, out_w), col
    p = out_h * out_w
    col = im2col(x, kh, kw, stride, padding, out=col_out, layout="cn")
    col = col.reshape(c * kh * kw, n * p)
    if p >= 256:  # big images: N products (O, K) @ (K, P), written straight as NCHW
        y = w2 @ col.reshape(-1, n, p).transpose(1, 0, 2)
    else:  # small images: one product (O, K) @ (K, N*P), then (O, N, P) -> (N, O, P)
        y = get_array_module(x).ascontiguousarray((w2 @ col).reshape(o, n, p).transpose(1, 0, 2))
    return y.reshape(n, o, out_h, out_w), col


def conv2d_input_grad(dy, weight, h: int, w: int, stride: int, padding: int):
    """The adjoint of ``conv2d`` with respect to its input.

    Args:
        dy: (N, O, out_h, out_w).
        weight: (O, C, kh, kw).
        h, w: the input's spatial size.
    Returns:
        dx: (N, C, h, w) = W^T dy, spread back over the patches by col2im
        (a view into a padded array when padding > 0).
    """
    n, o, out_h, out_w = dy.shape
    _, c, kh, kw = weight.shape
    w_t = weight.reshape(o, -1).T  # (K, O)
    if _pointwise(kh, kw, stride, padding):
        return (w_t @ dy.reshape(n, o, out_h * out_w)).reshape(n, c, h, w)
    dy2 = _channels_first(dy)  # (O, N*P)
    out = None
    if get_array_module(dy) is np:
        out = scratch((c * kh * kw, n * out_h * out_w), np.result_type(weight, dy))
    dcol = np.matmul(w_t, dy2, out=out) if out is not None else w_t @ dy2  # (K, N*P)
    dcol = dcol.reshape(c, kh, kw, n, out_h, out_w)
    return col2im(dcol, h, w, stride, padding, layout="cn")


def conv2d_weight_grad(col, dy):
    """Gradient of ``conv2d`` with respect to its weight.

    Args:
        col: the patches ``conv2d`` returned: (K, N*P), or (N, K, P) from the 1x1 path.
        dy: (N, O, out_h, out_w).
    Returns:
        dW: (O, K) = dy (O, N*P) @ col^T, the sum over the batch and the pixels
        (reshape to (O, C, kh, kw)).
    """
    n, o = dy.shape[:2]
    # Computed as its transpose, col @ dy^T (K, O): BLAS is markedly faster with the
    # long N*P axis contracted this way round than as dy @ col^T.
    if col.ndim == 3:  # 1x1 path: a batch of products, then the sum over it
        return (col @ dy.reshape(n, o, -1).transpose(0, 2, 1)).sum(axis=0).T
    return (col @ _channels_first(dy).T).T


class Conv2d(Module):
    """y = W * x + b, PyTorch's ``nn.Conv2d`` (square kernel, stride and padding).

    Parameters:
        weight: (out_channels, in_channels, kernel_size, kernel_size), He-normal init.
        bias: (out_channels,), zeros (absent when ``bias=False``).

    ``forward(x (N, C_in, H, W)) -> (N, C_out, out_h, out_w)`` with
    out = floor((H + 2*padding - kernel_size) / stride) + 1.
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
        self._col_buffer = None  # the patches' array, reused by the next forward

    def output_size(self, size: int) -> int:
        """Output length along one axis for an input of ``size``."""
        return conv_output_size(size, self.kernel_size, self.stride, self.padding)

    def _col_out(self, x):
        """The array the patches of ``x`` are written into: the previous one when it fits.

        The patches are needed only until the backward pass, so the next forward
        can overwrite them; reusing the array saves allocating (and page
        faulting) tens of megabytes per call. None for the 1x1 fast path, which
        needs no patches.
        """
        k, s, p = self.kernel_size, self.stride, self.padding
        if k == 1 and s == 1 and p == 0:
            return None
        shape = col_shape(x.shape, k, k, s, p, layout="cn")
        buf = self._col_buffer
        xp = get_array_module(x)
        if (
            buf is None
            or buf.shape != shape
            or buf.dtype != x.dtype
            or get_array_module(buf) is not xp
        ):
            buf = self._col_buffer = xp.empty(shape, dtype=x.dtype)
        return buf

    def forward(self, x):
        check_nchw(x, "Conv2d", self.in_channels)
        check_float(x, "Conv2d")
        k, p = self.kernel_size, self.padding
        if x.shape[2] + 2 * p < k or x.shape[3] + 2 * p < k:
            raise ValueError(
                f"Conv2d: kernel {k}x{k} is larger than the padded input "
                f"{x.shape[2] + 2 * p}x{x.shape[3] + 2 * p} (input {tuple(x.shape)}, padding {p})"
            )
        y, col = conv2d(x, self.weight.data, self.stride, p, col_out=self._col_out(x))
        if self.bias is not None:
            y += self.bias.data.reshape(1, -1, 1, 1)
        self._cache = (x.shape, col)
        return y

    def backward(self, dy):
        """dy (N, C_out, out_h, out_w) -> dx (N, C_in, H, W); adds into weight.grad, bias.grad."""
        x_shape, col = self._cache
        if self.weight.requires_grad:
            self.weight.grad += conv2d_weight_grad(col, dy).reshape(self.weight.shape)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += dy.sum(axis=(0, 2, 3))
        return conv2d_input_grad(dy, self.weight.data, *x_shape[2:], self.stride, self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )


__all__ = ["Conv2d", "conv2d", "conv2d_input_grad", "conv2d_weight_grad"]
