"""Winograd's F(2x2, 3x3) on the accelerated CPU path: a 3x3 convolution with 2.25x fewer
multiplications, for the wide layers where that pays (``winograd_pays``).

A 3x3 correlation of a 4x4 input tile d gives a 2x2 output tile, and Winograd's
minimal filtering algorithm computes it as

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise, on 4x4 arrays)

16 multiplications per channel pair instead of 36. Over C input and O output
channels the elementwise product becomes 16 matrix products (O, C) @ (C, tiles),
one per position of the 4x4 transformed tile. The catch: the transforms, on either
side of the products (the tiles overlap by 2 pixels, so the input transform reads
each pixel 4 times and writes 4 values per pixel, as do the products' results), are
passes over memory that a convolution by one product never makes. Here each is, for
a block of channels, one strided copy of the tiles and one small product with the
transform's matrix (``BB``, ``AA``): few NumPy calls a piece. They cost in proportion
to the values they move (C*H*W an image), the products to C*O*H*W: so the form pays
on the wide layers (VGG16's 256 and 512 channels), not on the narrow ones
(``python -m minifcn.bench --winograd`` times the parts beside the other forms'
forward).

The values are the convolution's up to rounding (the transforms' additions round
differently from one product's sums), not its bits: so the form is kept to layers
of WINOGRAD_CHANNELS channels or more, which the mini backbone has none of, and the
tests compare it with the plain path within float rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .workers import blocks, run

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
# The 2-D transforms as matrices on flattened tiles: (B^T d B).flat = BB @ d.flat, and so on
BB = np.kron(B_T, B_T)  # (16, 16)
GG = np.kron(G, G)  # (16, 9)
AA = np.kron(A_T, A_T)  # (4, 16)
# G J = P G (J reverses the order of a kernel's rows, P swaps rows 0 and 3 of G): the kernel
# turned by 180 degrees transforms to U with its tile positions permuted by P both ways
_P = (3, 1, 2, 0)
TURNED = tuple(_P[a] * 4 + _P[b] for a in range(4) for b in range(4))

WINOGRAD_CHANNELS = 256  # the form for 3x3 stride-1 layers with this many channels in and out
PIECES = 8  # the transforms are cut into this many blocks (of channels, of the weight)


class Winograd(NamedTuple):
    """Saved by a ``conv2d`` in this form: the input and its padding (the weight gradient
    makes its patches from them), and the transformed weight (the input gradient's)."""

    x: np.ndarray  # (N, C, H, W)
    padding: int
    u: np.ndarray  # (16, O, C), ``transform_weight``


def winograd_pays(c: int, o: int, kh: int, kw: int, stride: int, out_h: int, out_w: int) -> bool:
    """Whether a convolution of C -> O channels runs in this form: 3x3, stride 1, an even
    output (the tiles are 2x2), and at least WINOGRAD_CHANNELS channels in and out."""
    shape_fits = (kh, kw, stride) == (3, 3, 1) and out_h % 2 == 0 and out_w % 2 == 0
    return shape_fits and out_h > 0 and out_w > 0 and min(c, o) >= WINOGRAD_CHANNELS


def transform_weight(weight):
    """weight (O, C, 3, 3) -> U (16, O, C): G g G^T for every channel pair, as one product
    (16, 9) @ (9, O*C) in pieces of columns."""
    if weight.shape[2:] != (3, 3):
        raise ValueError(f"F(2x2, 3x3) needs a 3x3 kernel, not {weight.shape[2:]}")
    o, c = weight.shape[:2]
    g = weight.reshape(o * c, 9).T  # (9, O*C), a view where the weight is contiguous
    u = np.empty((16, o * c), dtype=weight.dtype)
    gg = GG.astype(weight.dtype)
    parts = blocks(o * c, PIECES, 1)

    def piece(k):
        np.matmul(gg, g[:, parts[k]], out=u[:, parts[k]])

    run(piece, len(parts))  # a wide layer's: always worth the pool
    return u.reshape(16, o, c)


def turned(u):
    """U (16, O, C) of a weight -> the 16 (C, O) matrices of the same weight turned by 180
    degrees, its in and out channels swapped (the input gradient's): views, no copy."""
    return [u[k].T for k in TURNED]


def _tiles(h: int, w: int, padding: int) -> tuple[int, int]:
    """The 2x2 output tiles down and across of a 3x3 stride-1 convolution."""
    out_h, out_w = h + 2 * padding - 2, w + 2 * padding - 2
    if out_h % 2 or out_w % 2 or out_h < 2 or out_w < 2:
        raise ValueError(f"F(2x2, 3x3) tiles the output in 2x2 blocks: {out_h}x{out_w} is odd")
    return out_h // 2, out_w // 2


def transform_input(x, padding: int):
    """x (N, C, H, W) -> V (16, C, N*T*T): B^T d B of every 4x4 tile d at stride 2 of the
    padded image, for an output of (H + 2p - 2) x (W + 2p - 2) with even sides. Each
    piece (a block of channels) copies its tiles out, 16 values each (one strided
    copy), and transforms them in one product BB @ tiles."""
    n, c, h, w = x.shape
    th, tw = _tiles(h, w, padding)
    xp = x if padding == 0 else np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2))
    s_n, s_c, s_h, s_w = xp.strides
    # tiles[i, j, c, n, ty, tx] = xp[n, c, 2*ty + i, 2*tx + j]
    tiles = as_strided(xp, (4, 4, c, n, th, tw), (s_h, s_w, s_c, s_n, 2 * s_h, 2 * s_w))
    v = np.empty((16, c, n * th * tw), dtype=x.dtype)
    bb = BB.astype(x.dtype)
    parts = blocks(c, PIECES, 1)

    def piece(k):
        ch = parts[k]
        d = np.empty((4, 4, ch.stop - ch.start, n, th, tw), dtype=x.dtype)
        np.copyto(d, tiles[:, :, ch])
        np.matmul(bb, d.reshape(16, -1), out=v[:, ch].reshape(16, -1))

    run(piece, len(parts))
    return v


def products(u, v):
    """U (16 matrices (O, C)), V (16, C, tiles) -> M (16, O, tiles): 16 matrix products,
    one a piece."""
    m = np.empty((16, u[0].shape[0], v.shape[2]), dtype=np.result_type(u[0], v))

    def piece(k):
        np.matmul(u[k], v[k], out=m[k])

    run(piece, 16)
    return m


def transform_output(m, n: int, out_h: int, out_w: int, bias=None):
    """M (16, O, N*T*T) -> y (N, O, out_h, out_w): A^T m A of every tile, one product
    AA @ m for a block of output channels, then one copy into place (+ bias (O,) per
    channel, if given, in that copy)."""
    o = m.shape[1]
    th, tw = out_h // 2, out_w // 2
    y = np.empty((n, o, th, 2, tw, 2), dtype=m.dtype)
    into = y.transpose(3, 5, 1, 0, 2, 4)  # [a, b, o, n, ty, tx] = y[n, o, ty, a, tx, b]
    aa = AA.astype(m.dtype)
    parts = blocks(o, PIECES, 1)

    def piece(k):
        ch = parts[k]
        tiles = (aa @ m[:, ch].reshape(16, -1)).reshape(2, 2, ch.stop - ch.start, n, th, tw)
        if bias is None:
            np.copyto(into[:, :, ch], tiles)
        else:
            np.add(tiles, bias[ch].reshape(1, 1, -1, 1, 1, 1), out=into[:, :, ch])

    run(piece, len(parts))
    return y.reshape(n, o, out_h, out_w)


def conv3x3(x, u, padding: int, bias=None):
    """The 3x3, stride-1 convolution of x (N, C, H, W) by the weight whose transform is u
    (``transform_weight``, or ``turned``) (+ bias (O,)), by F(2x2, 3x3):
    -> y (N, O, H + 2p - 2, W + 2p - 2)."""
    n, _, h, w = x.shape
    m = products(u, transform_input(x, padding))
    return transform_output(m, n, h + 2 * padding - 2, w + 2 * padding - 2, bias)
