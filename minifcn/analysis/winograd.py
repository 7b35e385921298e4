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

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def transform_weight(weight):
    """weight (O, C, 3, 3) -> U (16, O, C): G g G^T for every channel pair."""
    if weight.shape[2:] != (3, 3):
        raise ValueError(f"F(2x2, 3x3) needs a 3x3 kernel, not {weight.shape[2:]}")
    u = np.einsum("ai,ocij,bj->aboc", G, weight, G).astype(weight.dtype)
    return u.reshape(16, *weight.shape[:2])


def _transform(src, m, axis: int, step: int, count: int, out):
    """out[r] = sum over k of m[r, k] * src[..., k + step*t, ...] along ``axis`` for
    t < count: the 1-D transform ``m`` of every tile, written as the additions it is,
    each a whole-array operation on strided views (no tile is copied out first)."""

    def part(k):
        index = [slice(None)] * src.ndim
        index[axis] = slice(k, k + step * (count - 1) + 1, step)
        return src[tuple(index)]

    for r, row in enumerate(m):
        terms = [(coef, part(k)) for k, coef in enumerate(row) if coef != 0]
        (c0, first), rest = terms[0], terms[1:]
        if c0 == 1:
            np.copyto(out[r], first)
        else:
            np.multiply(first, out.dtype.type(c0), out=out[r])
        for coef, term in rest:
            if coef == 1:
                np.add(out[r], term, out=out[r])
            elif coef == -1:
                np.subtract(out[r], term, out=out[r])
            else:
                out[r] += out.dtype.type(coef) * term
    return out


def transform_input(x, padding: int):
    """x (N, C, H, W) -> V (16, C, N*T*T): B^T d B of every 4x4 tile d at stride 2 of the
    padded image, for an output of (H + 2p - 2)^2 with an even side."""
    n, c, h, w = x.shape
    out_h, out_w = h + 2 * padding - 2, w + 2 * padding - 2
    if out_h % 2 or out_w % 2 or out_h < 2 or out_w < 2:
        raise ValueError(f"F(2x2, 3x3) tiles the output in 2x2 blocks: {out_h}x{out_w} is odd")
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    th, tw = out_h // 2, out_w // 2
    xc = xp.transpose(1, 0, 2, 3)  # (C, N, Hp, Wp): V's own order of channels and images
    rows = np.empty((4, c, n, th, xp.shape[3]), dtype=x.dtype)
    _transform(xc, B_T, axis=2, step=2, count=th, out=rows)  # B^T d, tile rows
    v = np.empty((4, 4, c, n, th, tw), dtype=x.dtype)
    for a in range(4):  # (B^T d) B, tile columns
        _transform(rows[a], B_T, axis=3, step=2, count=tw, out=v[a])
    return v.reshape(16, c, n * th * tw)


def products(u, v):
    """U (16, O, C), V (16, C, tiles) -> M (16, O, tiles): 16 matrix products."""
    return np.matmul(u, v)


def transform_output(m, n: int, out_h: int, out_w: int):
    """M (16, O, N*T*T) -> y (N, O, out_h, out_w): A^T m A of every tile."""
    o = m.shape[1]
    th, tw = out_h // 2, out_w // 2
    m6 = m.reshape(4, 4, o, n, th, tw)
    left = np.empty((2, 4, o, n, th, tw), dtype=m.dtype)
    _transform(m6, A_T, axis=0, step=1, count=1, out=left[:, None])  # A^T m
    y = np.empty((n, o, th, 2, tw, 2), dtype=m.dtype)
    yt = y.transpose(3, 5, 1, 0, 2, 4)  # (2, 2, O, N, th, tw) views of y
    for a in range(2):  # (A^T m) A
        _transform(left[a], A_T, axis=0, step=1, count=1, out=yt[a][:, None])
    return y.reshape(n, o, out_h, out_w)


def conv3x3(x, weight, padding: int = 1):
    """The 3x3, stride-1 convolution (no bias) of x by weight, by F(2x2, 3x3)."""
    n, _, h, w = x.shape
    v = transform_input(x, padding)
    y = transform_output(
        products(transform_weight(weight), v), n, h + 2 * padding - 2, w + 2 * padding - 2
    )
    return y
