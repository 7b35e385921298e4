"""Winograd's F(2x2, 3x3): a 3x3 convolution with 2.25x fewer multiplications, in parts.

A 3x3 correlation of a 4x4 input tile d gives a 2x2 output tile, and Winograd's
minimal filtering algorithm computes it as

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise, on 4x4 arrays)

16 multiplications per channel pair instead of 36. Over C input and O output
channels the elementwise product becomes 16 matrix products (O, C) @ (C, tiles),
one per position of the 4x4 transformed tile. The catch: the transforms are
additions over every tile (the tiles overlap by 2 pixels, so the input transform
reads each pixel 4 times and writes 4 values per pixel, as do the products'
results), passes over memory that a convolution by one product never makes.
``python -m minifcn.bench --winograd`` times the parts against minifcn's forward at
VGG16's 3x3 shapes; this module is where it is written out, once, for that.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def transform_weight(weight):
    """weight (O, C, 3, 3) -> U (16, O, C): G g G^T for every channel pair."""
    if weight.shape[2:] != (3, 3):
        raise ValueError(f"F(2x2, 3x3) needs a 3x3 kernel, not {weight.shape[2:]}")
    u = np.einsum("ai,ocij,bj->aboc", G, weight, G).astype(weight.dtype)
    return u.reshape(16, *weight.shape[:2])


def _rows(d, m, axis: int):
    """The 1-D transform ``m`` (rows: outputs, columns: inputs) along ``axis`` of d, written
    as the additions it is (no multiply-adds over the tile)."""
    parts = [np.take(d, i, axis=axis) for i in range(d.shape[axis])]
    out = []
    for row in m:
        acc = None
        for coef, part in zip(row, parts):
            if coef == 0:
                continue
            term = part if coef == 1 else (-part if coef == -1 else coef * part)
            acc = term if acc is None else acc + term
        out.append(acc)
    return np.stack(out, axis=axis)


def transform_input(x, padding: int):
    """x (N, C, H, W) -> V (16, C, N*T*T): B^T d B of every 4x4 tile d at stride 2 of the
    padded image, for an output of (H + 2p - 2)^2 with an even side."""
    n, c, h, w = x.shape
    out_h, out_w = h + 2 * padding - 2, w + 2 * padding - 2
    if out_h % 2 or out_w % 2 or out_h < 2 or out_w < 2:
        raise ValueError(f"F(2x2, 3x3) tiles the output in 2x2 blocks: {out_h}x{out_w} is odd")
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    th, tw = out_h // 2, out_w // 2
    s = xp.strides
    tiles = as_strided(xp, (n, c, th, tw, 4, 4), (s[0], s[1], 2 * s[2], 2 * s[3], s[2], s[3]))
    v = _rows(_rows(tiles, B_T, axis=4), B_T, axis=5)  # (N, C, th, tw, 4, 4)
    return np.ascontiguousarray(v.transpose(4, 5, 1, 0, 2, 3)).reshape(16, c, n * th * tw)


def products(u, v):
    """U (16, O, C), V (16, C, tiles) -> M (16, O, tiles): 16 matrix products."""
    return np.matmul(u, v)


def transform_output(m, n: int, out_h: int, out_w: int):
    """M (16, O, N*T*T) -> y (N, O, out_h, out_w): A^T m A of every tile."""
    o = m.shape[1]
    th, tw = out_h // 2, out_w // 2
    m6 = m.reshape(4, 4, o, n, th, tw)
    y = _rows(_rows(m6, A_T, axis=0), A_T, axis=1)  # (2, 2, O, N, th, tw)
    return np.ascontiguousarray(y.transpose(3, 2, 4, 0, 5, 1)).reshape(n, o, out_h, out_w)


def conv3x3(x, weight, padding: int = 1):
    """The 3x3, stride-1 convolution (no bias) of x by weight, by F(2x2, 3x3)."""
    n, _, h, w = x.shape
    v = transform_input(x, padding)
    y = transform_output(
        products(transform_weight(weight), v), n, h + 2 * padding - 2, w + 2 * padding - 2
    )
    return y
