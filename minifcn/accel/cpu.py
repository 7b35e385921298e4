"""The accelerated path on NumPy: the plain layers' results, computed with less memory traffic.

Every function has the name, arguments and results of its plain twin in
``minifcn/nn/`` (only the state kept for backward differs). What each one buys
is measured by ``python -m minifcn.bench`` (its "plain ms" column).

Convolution (``conv2d``, ``conv2d_input_grad``, ``conv2d_weight_grad``)
    * Stride 1 where ``row_shift_pays`` (maps of ROW_SHIFT_PIXELS or more, or of
      NARROW_PIXELS or more with few channels), the "row-shift" form: im2col copies each
      pixel kh*kw times, but a kernel row i only needs the rows of kernel row 0
      moved down by i. So for a band of output rows of one image, the zero-padded
      input rows it reads are copied kw times, shifted one column each time, straight
      from x (the piece writes the padding's zeros itself, ``_shifted``): cols
      (C*kw, (rows + kh - 1)*out_w), kw copies instead of kh*kw. ONE product with the
      kernel rows stacked, (kh*O, C*kw) @ cols, gives every kernel row's partial
      sums z[i]; y = the sum over i of z[i] moved up by i rows. The weight
      gradient is kh products of dy with cols read i rows down (no copy), made
      in one stacked product. The
      input gradient is itself a stride-1 convolution: of dy with the kernel
      turned by 180 degrees and its in/out channels swapped, so it runs the same
      code (the same choice of form, too) and writes each dx pixel once instead of
      col2im's k*k additions.
      Bands of a few MiB stay in cache between the copies and the product;
      images smaller than that go several to a product (``_row_pieces``).
      The partial sums z are kh times the output, so the form loses when the
      convolution widens the channels much (per output pixel it moves about
      6C + 6O values against im2col's 18C, for 3x3): so conv1_1 of VGG16 (3 -> 64)
      stays im2col. The limit O <= 4C is chosen on the whole training step, not
      on layers alone: the channel-doubling layers (O = 2C) can be faster alone
      as im2col, yet the step is slower with them there (``python -m
      minifcn.bench`` times the layers and the step).
    * 3x3, stride 1, an even output and WINOGRAD_CHANNELS (256) channels or more in and
      out (VGG16's conv3 to conv5): Winograd's F(2x2, 3x3) (``minifcn.accel.winograd``),
      2.25x fewer multiply-adds for 16 products instead of one, and transforms on either
      side that are each a strided copy and a small product. Its input gradient is the
      same form, with the forward's transformed weight turned (a view); its weight
      gradient the batch-major product, from patches made in the backward.
    * Small maps, O > 4C and other strides: the patches are stored as (C, kh, kw, N,
      out_h, out_w), so that the whole batch is ONE matrix product (O, K) @
      (K, N*P), which BLAS runs much faster than N small ones (on a small map the
      row-shift form's per-image products are too small to run fast).
    * 1x1 kernels, stride 1, no padding: the image is its own patch matrix.
    * ``conv2d_bias`` adds the bias where each form writes its output (in the pieces,
      or in the batch-major form's transposing copy), not in a pass of its own. With one
      image (as the paper trains) the batch-major product's output is the image's own,
      so there is no transposing copy: the product writes it, and adds the bias, in place.
Transposed convolution (``conv_transpose2d``, ``conv_transpose2d_backward``)
    The "sub-pixel" form: with the kernel zero-padded to m*s (m = ceil(k/s)), output
    pixel (R*s + u, S*s + v) is a sum over an m x m window of input pixels with
    weights that depend only on the phase (u, v). So every output block of s x s
    pixels comes from ONE small im2col (an m x m window of the input, K = I*m*m)
    times a (K, O*s*s) matrix, and backward is the transposed products. No
    col2im over a (I*k*k)-row matrix: FCN's 16/8 and 64/32 upsampling get 4x fewer
    multiply-adds of memory traffic than as the adjoint of a convolution.
Max pooling (``max_pool2d``, ``max_pool2d_backward``) and ReLU (``relu``, ``relu_backward``)
    ``pool.py``'s tiled views and the plain ReLU's arithmetic, in pieces of images.
Loss (``softmax_xent``, ``softmax_xent_totals``, ``softmax_xent_backward``)
    The forward pass finishes the gradient, softmax - one_hot (0 on ignored pixels),
    in place in the exp buffer; backward scales it in place and hands it over. The
    layer calls ``softmax_xent_totals``, which also makes its label checks and sums.
Threads: each layer cuts its work into pieces fixed by the shapes alone (bands or
    groups of images, ``_row_pieces``; blocks of a product's columns and rows,
    ``_product``; one image of a transposed convolution, or the whole batch where an
    image is little work, ``_image_groups``) and runs them with
    ``workers.run``; where pieces add up (a weight gradient) each writes its own share
    and the shares are added in piece order, so no result depends on the thread count.
    A piece makes few NumPy calls: two threads' pieces take turns at the interpreter
    lock at every call (NumPy lets go of it only inside a call), and each turn costs
    (``python -m minifcn.bench --scaling`` measures it). The loss is the one layer cut
    by the thread count, one block of images per thread (``_thread_blocks``): each of its
    values is a pixel's own, so no cut changes one, and more blocks only add turns. A
    convolution's backward runs its weight and input gradients as two such pieces
    (``conv2d_backward``).
Buffers: temporaries of megabytes come from ``BUFFERS``, which hands out an
    array again once nothing refers to it any more; that saves the page faults
    of fresh memory, which a product filling a new array pays for every page.
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys
import threading
import weakref
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from ..nn import relu as plain_relu
from ..nn.im2col import conv_output_size
from . import pool as tiled
from . import winograd
from .shared import channels_first, pointwise
from .workers import PARALLEL_WORK, pool_threads, run
from .workers import blocks as _blocks

BAND_BYTES = 4 * 2**20  # the shifted copies of one band of output rows: about this much
ROW_SHIFT_PIXELS = 1024  # the row-shift form for output maps of at least this many pixels,
NARROW_PIXELS, NARROW_CHANNELS = 512, 64  # and of this many with at most this many input channels
MIN_PIECES = 4  # a layer's work is cut into at least this many pieces where it allows
PIECE_ROWS, PIECE_COLUMNS = 32, 512  # the smallest blocks of a product's output,
PIECE_MACS = 2**24  # and the fewest multiply-adds of a piece: smaller products stay whole
LARGE_GRAD_VALUES = 2**20  # weight gradients this large are made (O, K), not transposed
ELEMENTWISE_WORK = 2**20  # pooling, ReLU, loss: the fewest values a block of images moves
LOSS_PASSES = 10  # the loss reads or writes each score about this many times


def row_shift_pays(c: int, o: int, pixels: int) -> bool:
    """Whether a stride-1 convolution of C -> O channels onto ``pixels`` output pixels per
    image runs faster in the row-shift form than as one im2col product over the batch.

    The row-shift products are per image, (kh*O, C*kw) @ (C*kw, pixels): on small maps
    they are too small for BLAS to run fast, less so when C is small (then im2col's
    copies, C*kh*kw values per pixel, are what costs). The limits are measured with
    ``python -m minifcn.bench`` on the shapes of both backbones.
    """
    if o > 4 * c:
        return False
    return pixels >= ROW_SHIFT_PIXELS or (pixels >= NARROW_PIXELS and c <= NARROW_CHANNELS)


class Buffers:
    """Scratch arrays handed out again once no array refers to them any more.

    ``take(shape, dtype)`` returns a C-contiguous array with garbage in it. The
    pool keeps every array it made; one is free when the pool holds the only
    reference (views of it keep it busy, as they refer to it). Free arrays above
    ``keep_bytes`` in all are let go, the oldest first.
    """

    def __init__(self, keep_bytes: int = 256 * 2**20):
        self.keep_bytes = keep_bytes
        self._arrays = []
        self._lock = threading.Lock()  # the pieces of a layer take buffers from several threads

    def take(self, shape, dtype):
        with self._lock:
            return self._take(shape, dtype)

    def _take(self, shape, dtype):
        dtype = np.dtype(dtype)
        size = shape if isinstance(shape, int) else math.prod(shape)
        for k in range(len(self._arrays)):
            a = self._arrays[k]
            # free: referred to only by the list, `a` and getrefcount's argument
            if a.size == size and a.dtype == dtype and sys.getrefcount(a) == 3:
                self._arrays.append(self._arrays.pop(k))  # most recently used last
                return a.reshape(shape)
        a = np.empty(size, dtype=dtype)
        self._arrays.append(a)
        self._trim()
        return a.reshape(shape)

    def _trim(self) -> None:
        free = [a for a in self._arrays if sys.getrefcount(a) == 3]
        extra = sum(a.nbytes for a in free) - self.keep_bytes
        for a in free:
            if extra <= 0:
                break
            extra -= a.nbytes
            self._arrays = [b for b in self._arrays if b is not a]


BUFFERS = Buffers()

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory(max_block: int = 64 * 2**20) -> bool:
    """Let the process keep freed memory blocks of up to ``max_block`` bytes for reuse.

    glibc hands a freed block above its (adaptive) threshold back to the operating
    system, and the next array of that size is faulted in again page by page, each
    page zeroed: thousands of page faults per training step. Raising both
    thresholds keeps such blocks in the process (it then does not shrink back
    after a peak). Process-wide, so the commands call it (``train``, ``bench``),
    not the layers. Returns False, changing nothing, where the C library has no
    ``mallopt`` (not glibc) or the plain path is selected.
    """
    from ..backend import accelerated

    if not accelerated():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    kept = mallopt(M_MMAP_THRESHOLD, max_block) == 1
    return kept and mallopt(M_TRIM_THRESHOLD, 4 * max_block) == 1


def _piece_count(macs: int, most: int = MIN_PIECES) -> int:
    """How many pieces a product of ``macs`` multiply-adds is cut into: at most ``most``,
    none under PIECE_MACS, at least 1."""
    return max(1, min(most, macs // PIECE_MACS))


def _product(a, b, out, bias=None) -> None:
    """out (M, N) = a (M, K) @ b (K, N) (+ bias (M,) per row, if given, added to each block
    while it is in cache), in pieces: blocks of columns, and of rows too where the columns
    give fewer than MIN_PIECES, none under PIECE_MACS multiply-adds. Columns first, so
    that each piece keeps all of a convolution's few rows (O) and BLAS gets the widest
    products the cut allows (the conv3x3 256 and 512 rows of ``python -m minifcn.bench``
    are such products). Each output value comes whole from one piece (the sum over K is
    never split), and the blocks are fixed by the shapes alone."""
    m, n = out.shape
    count = _piece_count(m * n * a.shape[1])
    cols = _blocks(n, count, PIECE_COLUMNS)
    rows = _blocks(m, -(-count // len(cols)), PIECE_ROWS)
    pieces = [(r, c) for r in rows for c in cols]

    def piece(k):
        r, c = pieces[k]
        np.matmul(a[r], b[:, c], out=out[r, c])
        if bias is not None:
            out[r, c] += bias[r, None]

    run(piece, len(pieces))


def _padded(x, p: int):
    """x (N, C, H, W) -> (N, C, H + 2p, W + 2p), zero border (x itself when p == 0)."""
    if p == 0:
        return x
    n, c, h, w = x.shape
    out = np.empty((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype)
    out[:, :, :p] = 0
    out[:, :, p + h :] = 0
    out[:, :, p : p + h, :p] = 0
    out[:, :, p : p + h, p + w :] = 0
    out[:, :, p : p + h, p : p + w] = x
    return out


def _gather(img, col, kh: int, kw: int, s: int) -> None:
    """im2col of a padded img (..., Hp, Wp) into col (..., kh, kw, out_h, out_w): ONE
    copy, from a strided view whose (i, j, y, x) element is img[..., i + s*y, j + s*x]."""
    out_h, out_w = col.shape[-2:]
    *lead, sh, sw = img.strides
    shape = (*img.shape[:-2], kh, kw, out_h, out_w)
    np.copyto(col, as_strided(img, shape, (*lead, sh, sw, s * sh, s * sw), writeable=False))


def _scatter_add(col, img, kh: int, kw: int, s: int) -> None:
    """col2im: add col (..., kh, kw, out_h, out_w) into the padded img (..., Hp, Wp)."""
    out_h, out_w = col.shape[-2:]
    for i in range(kh):
        for j in range(kw):
            img[..., i : i + s * out_h : s, j : j + s * out_w : s] += col[..., i, j, :, :]


def _row_pieces(n: int, c: int, kh: int, kw: int, out_h: int, out_w: int, itemsize: int):
    """The pieces of a row-shift convolution, (images, output rows) slice pairs whose
    shifted copies (c*kw values per input pixel) take about BAND_BYTES: bands of rows of
    one image when an image is larger than that, else groups of whole images (one
    product for several small images runs faster than one each), at least MIN_PIECES
    pieces where the batch has that many images. Fixed by the shapes alone: the
    pieces run on ``minifcn.accel.workers``, and their results must not depend on how
    many threads there are."""
    per_row = c * kw * out_w * itemsize
    rows = max(1, BAND_BYTES // per_row - (kh - 1))
    if rows < out_h:
        bands = [slice(r, min(r + rows, out_h)) for r in range(0, out_h, rows)]
        return [(slice(b, b + 1), band) for b in range(n) for band in bands]
    images = max(1, min(BAND_BYTES // (per_row * (out_h + kh - 1)), -(-n // MIN_PIECES)))
    return [(slice(b, min(b + images, n)), slice(0, out_h)) for b in range(0, n, images)]


def _shifted(x, images: slice, rows: slice, p: int, kh: int, buf, kw: int, out_w: int):
    """The input a row-shift piece reads, copied kw times: (C*kw, nb, rin*out_w), where
    [(c, j), b, t*out_w + u] is the zero-padded x[images][b, c, rows.start + t, j + u]
    (x (N, C, H, W), padding p, rin = r + kh - 1 padded rows for r output rows). Made
    straight from x by the piece that reads it, kw copies (one per column shift j) into
    ``buf``, and zeros where a read falls in the padding: the padded batch is never
    made, and the piece makes no padded copy of its rows either (one pass less over
    them, as the padding is only ever read here)."""
    _, c, h, w = x.shape
    nb, start = images.stop - images.start, rows.start
    rin = rows.stop - start + kh - 1
    cols = buf[: c * kw * nb * rin * out_w].reshape(c, kw, nb, rin, out_w)
    lo = min(rin, max(0, p - start))  # padded row start + t is image row start + t - p:
    hi = max(lo, min(rin, h + p - start))  # rows [lo, hi) are in the image
    if lo > 0:  # (each call costs a turn at the interpreter lock: none on empty slices)
        cols[:, :, :, :lo] = 0
    if hi < rin:
        cols[:, :, :, hi:] = 0
    src = x[images, :, start + lo - p : start + hi - p].transpose(1, 0, 2, 3)  # (C, nb, ., W)
    for j in range(kw):
        u1 = max(0, min(out_w, w + p - j))  # columns [u0, u1) read the image:
        u0 = min(max(0, p - j), u1)  # 0 <= j + u - p < w
        into = cols[:, j, :, lo:hi]
        if u0 > 0:
            into[..., :u0] = 0
        if u1 < out_w:
            into[..., u1:] = 0
        if u1 > u0 and hi > lo:
            np.copyto(into[..., u0:u1], src[..., u0 + j - p : u1 + j - p])
    return cols.reshape(c * kw, nb, rin * out_w)


def _piece_work(pieces, per_value: int, kh: int, out_w: int) -> int:
    """The work of the largest piece: ``per_value`` per shifted input pixel."""
    images, rows = pieces[0]
    return per_value * (images.stop - images.start) * (rows.stop - rows.start + kh - 1) * out_w


def _piece_buffer(pieces, per_value: int, kh: int, out_w: int, dtype):
    """A buffer for the largest piece (one per piece that runs at the same time):
    ``per_value`` values per shifted input pixel."""
    return BUFFERS.take(_piece_work(pieces, per_value, kh, out_w), dtype)


class RowShift(NamedTuple):
    """Saved by a stride-1 ``conv2d``: the input and its padding, to copy the pieces again."""

    x: np.ndarray  # (N, C, H, W)
    padding: int
    kh: int
    kw: int


def _conv_row_shift(x, weight, padding: int, bias=None):
    """Stride-1 convolution in the row-shift form: -> y (N, O, out_h, out_w), RowShift;
    ``bias`` (O,), if given, added to each piece's output while it is in cache."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    out_h, out_w = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    stacked = weight.transpose(2, 0, 1, 3).reshape(kh * o, c * kw)  # row (i, o), col (c, j)
    y = np.empty((n, o, out_h, out_w), dtype=np.result_type(x, weight))
    pieces = _row_pieces(n, c, kh, kw, out_h, out_w, x.itemsize)

    def piece(k):
        images, rows = pieces[k]
        r = rows.stop - rows.start
        buf = _piece_buffer(pieces, c * kw, kh, out_w, x.dtype)
        cols = _shifted(x, images, rows, padding, kh, buf, kw, out_w)
        nb = cols.shape[1]
        z = _piece_buffer(pieces, kh * o, kh, out_w, y.dtype)[: kh * o * cols[0].size]
        np.matmul(stacked, cols.reshape(c * kw, -1), out=z.reshape(kh * o, -1))
        z = z.reshape(kh, o, nb, r + kh - 1, out_w)  # z[i]: kernel row i's partial sums
        out = y[images, :, rows].transpose(1, 0, 2, 3)  # (O, nb, r, out_w)
        if kh == 1:
            out[...] = z[0, :, :, :r]
        else:
            np.add(z[0, :, :, :r], z[1, :, :, 1 : 1 + r], out=out)
        for i in range(2, kh):
            out += z[i, :, :, i : i + r]
        if bias is not None:
            out += bias.reshape(o, 1, 1, 1)

    run(piece, len(pieces), work=_piece_work(pieces, kh * o * c * kw, kh, out_w))
    return y, RowShift(x, padding, kh, kw)


def _row_shift_weight_grad(saved: RowShift, dy):
    """dW (O, K) of a stride-1 convolution: kh products per image, over one copy.

    Kernel row i pairs dy with the copies read i rows down. The kh reads are one
    strided view of the copies (windows of r rows, i rows apart), so one stacked
    ``np.matmul`` makes every kernel row's product of every image of the piece.
    One call, not kh: ``np.matmul`` lets go of the interpreter lock only when its
    loop is larger than 500 (NumPy's generalized-ufunc loop, ufunc_object.c, counts
    the result's values, not the length of the sums), and one kernel row's result,
    C*kw x O, is smaller than that on the narrow layers (24 x 8 for 8 -> 8): such
    products would hold the lock and run one thread at a time. Stacked, the result
    is kh*nb times larger.
    """
    x, padding, kh, kw = saved
    n, o, out_h, out_w = dy.shape
    c = x.shape[1]
    dtype = np.result_type(x, dy)
    pieces = _row_pieces(n, c, kh, kw, out_h, out_w, x.itemsize)
    # each piece's share, parts[k, i, (c, j), o] (of dW[o, c, i, j]), added in piece order
    parts = np.empty((len(pieces), kh, c * kw, o), dtype=dtype)

    def piece(k):
        images, rows = pieces[k]
        r = rows.stop - rows.start
        buf = _piece_buffer(pieces, c * kw, kh, out_w, x.dtype)
        cols = _shifted(x, images, rows, padding, kh, buf, kw, out_w)  # made again
        nb = cols.shape[1]
        g = dy[images, :, rows].reshape(nb, o, r * out_w).transpose(0, 2, 1)  # (nb, P, O)
        # reads[i, b] = cols[:, b, i*out_w : (i + r)*out_w]: kernel row i, i rows down
        reads = sliding_window_view(cols, r * out_w, axis=2)[:, :, ::out_w]
        reads = reads.transpose(2, 1, 0, 3)  # (kh, nb, C*kw, P)
        if nb == 1:  # (C*kw, P) @ (P, O): BLAS is faster this way round
            np.matmul(reads, g, out=parts[k][:, None])
        else:  # one product per image (a loop in C), then their sum
            np.matmul(reads, g).sum(axis=1, out=parts[k])

    run(piece, len(pieces), work=_piece_work(pieces, kh * o * c * kw, kh, out_w))
    dw = parts.sum(axis=0)  # dw[i, (c, j), o] = dW[o, c, i, j]
    return dw.reshape(kh, c, kw, o).transpose(3, 1, 0, 2).reshape(o, -1)


def conv2d(x, weight, stride: int, padding: int):
    """As ``nn.conv.conv2d``: x (N, C, H, W), weight (O, C, kh, kw) -> y, saved.

    saved: (N, K, P) for 1x1 kernels (x itself), ``RowShift`` in the row-shift
    form, ``Winograd`` in that form, else the patches (K, N*P) in the batch-major layout.
    """
    return _conv2d(x, weight, stride, padding, None)


def _conv2d(x, weight, stride: int, padding: int, bias, winograd_form: bool = True):
    """``conv2d``, with ``bias`` (O,) added where each form writes its output (or None);
    ``winograd_form=False`` keeps to the other forms (``bench --winograd`` times both)."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    out_h = conv_output_size(h, kh, stride, padding)
    out_w = conv_output_size(w, kw, stride, padding)
    w2 = weight.reshape(o, -1)
    p = out_h * out_w
    if winograd_form and winograd.winograd_pays(c, o, kh, kw, stride, out_h, out_w):
        u = winograd.transform_weight(weight)
        return winograd.conv3x3(x, u, padding, bias), winograd.Winograd(x, padding, u)
    if stride == 1 and not pointwise(kh, kw, stride, padding) and row_shift_pays(c, o, p):
        return _conv_row_shift(x, weight, padding, bias)
    dtype = np.result_type(x, weight)
    if pointwise(kh, kw, stride, padding):  # the image is its own patch matrix
        col = x.reshape(n, c, h * w)
        y = np.empty((n, o, p), dtype=dtype)
        _per_image_product(w2, col, y, bias)
        return y.reshape(n, o, out_h, out_w), col
    col = _patches(x, kh, kw, stride, padding, out_h, out_w)
    if n == 1:  # one image (as the paper trains): the product's (O, P) is its output
        y = np.empty((1, o, p), dtype=dtype)
        _product(w2, col, y[0], bias)
        return y.reshape(n, o, out_h, out_w), col
    y2 = BUFFERS.take((o, n * p), dtype)
    _product(w2, col, y2)
    y = np.empty((n, o, p), dtype=dtype)
    if bias is None:
        np.copyto(y, y2.reshape(o, n, p).transpose(1, 0, 2))
    else:  # the bias added in the same pass
        np.add(y2.reshape(o, n, p).transpose(1, 0, 2), bias.reshape(1, o, 1), out=y)
    return y.reshape(n, o, out_h, out_w), col


def _patches(x, kh: int, kw: int, stride: int, padding: int, out_h: int, out_w: int):
    """The batch-major patches (C*kh*kw, N*out_h*out_w) of x (N, C, H, W), made in pieces
    of input channels."""
    n, c = x.shape[:2]
    xpad = _padded(x, padding)
    col = BUFFERS.take((c, kh, kw, n, out_h, out_w), x.dtype)
    channels = _blocks(c, MIN_PIECES, 1)

    def gather(k):  # the patches of a block of input channels
        ch = channels[k]
        _gather(
            xpad[:, ch].transpose(1, 0, 2, 3), col[ch].transpose(0, 3, 1, 2, 4, 5), kh, kw, stride
        )

    run(gather, len(channels), work=col.size // len(channels))
    return col.reshape(c * kh * kw, n * out_h * out_w)


def _per_image_product(a, b, out, bias=None) -> None:
    """out[i] = a @ b[i] (+ bias (M,) per row, if given) for every image i (a (M, K),
    b (N, K, P)), in pieces of (image, block of rows)."""
    m, k_, p = a.shape[0], a.shape[1], b.shape[2]
    rows = _blocks(m, _piece_count(m * k_ * p, -(-MIN_PIECES // b.shape[0])), PIECE_ROWS)
    pieces = [(i, r) for i in range(b.shape[0]) for r in rows]

    def piece(k):
        i, r = pieces[k]
        np.matmul(a[r], b[i], out=out[i, r])
        if bias is not None:
            out[i, r] += bias[r, None]

    run(piece, len(pieces), work=(rows[0].stop - rows[0].start) * k_ * p)


def _weight_grad_product(col, dy):
    """dW (O, K) from the patches and dy (N, O, out_h, out_w).

    col: (N, K, P) on the 1x1 shortcut (x itself), else the batch-major (K, N*P).

    Computed as its transpose col @ dy^T (K, O), in blocks of K rows (BLAS is faster
    with the long pixel axis contracted this way round), and returned as a transposed
    view; unless the gradient has LARGE_GRAD_VALUES values or more: then it is computed
    the (O, K) way round, dy @ col^T. Whoever adds a transposed view into the gradient
    reads it a column at a time, a pass that for 512 channels (a 9 MiB gradient) took
    longer than the product gains that way round (``python -m minifcn.bench``, the
    conv3x3 512 row's backward). Each value is the same products summed over the same
    pixels, either way round.
    """
    n, o = dy.shape[:2]
    k_ = col.shape[1] if col.ndim == 3 else col.shape[0]
    large = o * k_ >= LARGE_GRAD_VALUES
    out = np.empty((o, k_) if large else (k_, o), dtype=np.result_type(col, dy))
    if col.ndim == 2:
        dy2 = channels_first(dy)
        if large:
            _product(dy2, col.T, out)
        else:
            _product(col, dy2.T, out)
    else:  # 1x1: each block of rows sums its images' products in image order
        dy3 = dy.reshape(n, o, -1)
        rows = _blocks(out.shape[0], _piece_count(col.size * o), PIECE_ROWS)

        def piece(k):
            r = rows[k]
            if large:
                (dy3[:, r] @ col.transpose(0, 2, 1)).sum(axis=0, out=out[r])
            else:
                (col[:, r] @ dy3.transpose(0, 2, 1)).sum(axis=0, out=out[r])

        run(piece, len(rows), work=col.size * o // len(rows))
    return out if large else out.T


def conv2d_weight_grad(saved, dy):
    """As ``nn.conv.conv2d_weight_grad``: dW (O, K) from what ``conv2d`` saved and dy."""
    if isinstance(saved, RowShift):
        return _row_shift_weight_grad(saved, dy)
    if isinstance(saved, winograd.Winograd):  # the patches, made now from the input
        out_h, out_w = dy.shape[2:]
        return _weight_grad_product(_patches(saved.x, 3, 3, 1, saved.padding, out_h, out_w), dy)
    return _weight_grad_product(saved, dy)


def conv2d_input_grad(dy, weight, h: int, w: int, stride: int, padding: int):
    """As ``nn.conv.conv2d_input_grad``: dy (N, O, out_h, out_w) -> dx (N, C, h, w).

    At stride 1 the adjoint is itself a convolution: dy, padded by k - 1 - padding
    (cropped, when the padding is larger), correlated with the kernel turned by 180
    degrees, its in and out channels swapped; ``conv2d`` picks its form.
    """
    n, o, out_h, out_w = dy.shape
    _, c, kh, kw = weight.shape
    if pointwise(kh, kw, stride, padding):  # dx = W^T dy
        dx = np.empty((n, c, h * w), dtype=np.result_type(weight, dy))
        _per_image_product(weight.reshape(o, -1).T, dy.reshape(n, o, -1), dx)
        return dx.reshape(n, c, h, w)
    if stride == 1 and kh == kw:
        return conv2d(*_adjoint(dy, weight, padding))[0]
    dtype = np.result_type(weight, dy)
    hp = max(h + 2 * padding, stride * (out_h - 1) + kh)
    wp = max(w + 2 * padding, stride * (out_w - 1) + kw)
    img = np.zeros((n, c, hp, wp), dtype=dtype)
    dcol = BUFFERS.take((c * kh * kw, n * out_h * out_w), dtype)
    _product(weight.reshape(o, -1).T, channels_first(dy), dcol)
    dcol = dcol.reshape(c, kh, kw, n, out_h, out_w).transpose(0, 3, 1, 2, 4, 5)
    _scatter_add(dcol, img.transpose(1, 0, 2, 3), kh, kw, stride)
    return img[:, :, padding : padding + h, padding : padding + w]


def _adjoint(dy, weight, padding: int):
    """The stride-1 input gradient as a convolution's arguments (dy, turned, 1, q): dy
    padded by q = k - 1 - padding (cropped, when the padding is larger) and the kernel
    turned by 180 degrees, its in and out channels swapped (C, O, kh, kw)."""
    out_h, out_w = dy.shape[2:]
    turned = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    q = weight.shape[2] - 1 - padding
    if q < 0:  # the outer -q rows and columns of dy only saw padding
        dy, q = dy[:, :, -q : out_h + q, -q : out_w + q], 0
    return dy, turned, 1, q


def conv2d_backward(col, dy, weight, weight_grad, bias_grad, h, w, stride, padding, input_grad):
    """The backward of ``conv2d_bias``: adds into ``weight_grad`` (O, C, kh, kw) and
    ``bias_grad`` (O,) (either may be None, frozen) and returns dx (N, C, h, w), or
    None without ``input_grad``.

    The parameter gradients and the input gradient read dy and what the forward kept,
    not each other: so they are two pieces of one job, side by side on two threads,
    each computing its products whole (a piece's own pieces stay in its thread). On
    small maps that beats cutting each product into blocks for both threads: one
    hand-off instead of one per product, and products twice the size, which BLAS
    runs faster. The values are the bits of the three steps one after another.
    """
    if isinstance(col, winograd.Winograd):
        return _winograd_backward(col, dy, weight, weight_grad, bias_grad, padding, input_grad)
    dx = []

    # The input gradient is piece 0, which the calling thread (it starts at once) nearly
    # always takes: its output, the large array, is then allocated where the layers'
    # arrays are, not in a helper's own malloc arena, which faults fresh pages in.
    def piece(i):
        if i == 0 and input_grad:
            dx.append(conv2d_input_grad(dy, weight, h, w, stride, padding))
            return
        _add_parameter_grads(col, dy, weight_grad, bias_grad)

    run(piece, 2 if input_grad else 1)  # alone, the weight gradient cuts its own products
    return dx[0] if input_grad else None


def _winograd_backward(saved, dy, weight, weight_grad, bias_grad, padding: int, input_grad):
    """``conv2d_backward`` after a forward in Winograd's form: the input gradient by that
    form with the forward's transformed weight (``winograd.turned``), then the parameter
    gradients, each on every thread of the pool in turn. Not side by side, as the other
    forms' are: the input gradient is then much the shorter (its products are 2.25x
    smaller), and the thread that made it would wait for the other."""
    dx = None
    if input_grad:
        dy_q, _, _, q = _adjoint(dy, weight, padding)
        dx = winograd.conv3x3(dy_q, winograd.turned(saved.u), q)
    _add_parameter_grads(saved, dy, weight_grad, bias_grad)
    return dx


def _add_parameter_grads(saved, dy, weight_grad, bias_grad) -> None:
    """Adds the weight gradient (from what ``conv2d`` saved) and the bias gradient into
    ``weight_grad`` and ``bias_grad``, each unless it is None (frozen)."""
    if weight_grad is not None:
        dw = conv2d_weight_grad(saved, dy).reshape(weight_grad.shape)
        np.add(weight_grad, dw, out=weight_grad)
    if bias_grad is not None:
        np.add(bias_grad, dy.sum(axis=(0, 2, 3)), out=bias_grad)


def conv2d_bias(x, weight, bias, stride: int, padding: int):
    """``conv2d``, then + bias (O,) per output channel: the addition made where each form
    writes its output (in the pieces, while the output is in cache; no pass of its
    own). The values are the plain path's: the convolution's sums, then the bias. It
    keeps what ``conv2d`` keeps, which ``conv2d_backward`` reads."""
    return _conv2d(x, weight, stride, padding, bias)


# ------------------------------------------------------------ transposed convolution
class SubPixel(NamedTuple):
    """Saved by ``conv_transpose2d``: the input's m x m windows, and the geometry."""

    x2: np.ndarray  # (N*Hb*Wb, I*m*m): row (n, R, S), column (c, a, b) = x[n, c, R-a, S-b]
    x_shape: tuple  # (N, I, H, W)
    m: int  # windows of m x m input pixels; the kernel is zero-padded to m * stride


def _phase_weight(weight, s: int, m: int):
    """weight (I, O, k, k) -> W2 (I*m*m, O*s*s): row (c, a, b), column (o, u, v) holds
    weight[c, o, a*s + u, b*s + v] (zero where that is beyond k)."""
    i_, o, k, _ = weight.shape
    if m * s != k:
        full = np.zeros((i_, o, m * s, m * s), dtype=weight.dtype)
        full[:, :, :k, :k] = weight
        weight = full
    w6 = weight.reshape(i_, o, m, s, m, s)  # (c, o, a, u, b, v)
    return w6.transpose(0, 2, 4, 1, 3, 5).reshape(i_ * m * m, o * s * s)


def _copy_runs(dst, src) -> None:
    """dst[...] = src for arrays whose last axis is contiguous in both: each run along it
    is copied as ONE wide item (a void of its bytes). NumPy's copy loop goes item by
    item, so a short last axis (a transposed convolution's stride, 2 for upscore2) makes
    the plain copy slow. The bytes, so the bits, are the same; arrays that
    cannot be viewed so are copied plainly."""
    run = dst.shape[-1]
    if src.dtype != dst.dtype or src.shape != dst.shape or run < 2:
        dst[...] = src
        return
    wide = np.dtype((np.void, run * dst.itemsize))
    try:
        dst_runs, src_runs = dst.view(wide)[..., 0], src.view(wide)[..., 0]
    except ValueError:  # the last axis is not contiguous in one of them
        dst[...] = src
        return
    dst_runs[...] = src_runs


def _image_groups(n: int, per_image: int) -> list:
    """The pieces of a transposed convolution: one image each, or the whole batch in one
    where an image is less than PARALLEL_WORK multiply-adds (its pieces would run one
    after the other in this thread anyway, so each copy is made once for the batch
    rather than once an image). Each image's products are the same either way."""
    if per_image < PARALLEL_WORK:
        return [slice(0, n)]
    return [slice(i, i + 1) for i in range(n)]


def conv_transpose2d(x, weight, stride: int, padding: int):
    """As ``nn.conv_transpose.conv_transpose2d``: x (N, I, H, W) -> y (N, O, out_h, out_w).

    y_full[n, o, R*s + u, S*s + v] = sum over c, a, b of x[n, c, R-a, S-b] *
    weight[c, o, a*s + u, b*s + v], for blocks R < H + m - 1; y is y_full cropped by
    the padding to the output size.
    """
    n, ci, h, w = x.shape
    k, s = weight.shape[2], stride
    o = weight.shape[1]
    m = -(-k // s)
    hb, wb = h + m - 1, w + m - 1
    xpad = _padded(x, m - 1)
    x2 = np.empty((n, hb, wb, ci, m, m), dtype=x.dtype)
    w2 = _phase_weight(weight, s, m)
    dtype = np.result_type(x, weight)
    full = np.empty((n, o, hb * s, wb * s), dtype=dtype)
    work = hb * wb * ci * m * m * o * s * s
    groups = _image_groups(n, work)

    def group(i):  # one product an image (one stacked np.matmul for the group)
        g = groups[i]
        nb = g.stop - g.start
        for a in range(m):
            for b in range(m):
                window = xpad[g, :, m - 1 - a : m - 1 - a + hb, m - 1 - b : m - 1 - b + wb]
                x2[g, ..., a, b] = window.transpose(0, 2, 3, 1)
        y2 = BUFFERS.take((nb, hb * wb, o * s * s), dtype)
        np.matmul(x2[g].reshape(nb, hb * wb, ci * m * m), w2, out=y2)
        blocks = y2.reshape(nb, hb, wb, o, s, s).transpose(0, 3, 1, 4, 2, 5)
        _copy_runs(full[g].reshape(nb, o, hb, s, wb, s), blocks)

    run(group, len(groups), work=work * (groups[0].stop - groups[0].start))
    out_h, out_w = (h - 1) * s - 2 * padding + k, (w - 1) * s - 2 * padding + k
    y = full[:, :, padding : padding + out_h, padding : padding + out_w]
    return y, SubPixel(x2.reshape(n * hb * wb, ci * m * m), x.shape, m)


def conv_transpose2d_backward(saved, dy, weight, stride: int, padding: int, weight_grad: bool):
    """As ``nn.conv_transpose.conv_transpose2d_backward``: -> dx (N, I, H, W), dW or None."""
    x2, (n, ci, h, w), m = saved
    k, s = weight.shape[2], stride
    o = weight.shape[1]
    hb, wb = h + m - 1, w + m - 1
    out_h, out_w = dy.shape[2:]
    whole = padding == 0 and (out_h, out_w) == (hb * s, wb * s)
    w2t = _phase_weight(weight, s, m).T
    dtype = np.result_type(weight, dy)
    x3 = x2.reshape(n, hb * wb, ci * m * m)
    dx = np.empty((n, ci, h, w), dtype=dtype)
    parts = np.empty((n, ci * m * m, o * s * s), dtype=dtype) if weight_grad else None
    work = hb * wb * ci * m * m * o * s * s
    groups = _image_groups(n, work)

    def group(i):  # one product an image (one stacked np.matmul for the group)
        g = groups[i]
        nb = g.stop - g.start
        if whole:
            full = dy[g]
        else:  # the rows and columns the padding (or a short kernel) cut off get no gradient
            full = np.zeros((nb, o, hb * s, wb * s), dtype=dy.dtype)
            full[:, :, padding : padding + out_h, padding : padding + out_w] = dy[g]
        dy2 = BUFFERS.take((nb, hb, wb, o, s, s), dy.dtype)
        _copy_runs(dy2, full.reshape(nb, o, hb, s, wb, s).transpose(0, 2, 4, 1, 3, 5))
        dy2 = dy2.reshape(nb, hb * wb, o * s * s)
        dx2 = (dy2 @ w2t).reshape(nb, hb, wb, ci, m, m)
        acc = np.zeros((nb, h, w, ci), dtype=dx2.dtype)
        for a in range(m):
            for b in range(m):
                acc += dx2[:, a : a + h, b : b + w, :, a, b]
        dx[g] = acc.transpose(0, 3, 1, 2)
        if weight_grad:  # each image's share of dW, added in image order below
            np.matmul(x3[g].transpose(0, 2, 1), dy2, out=parts[g])

    run(group, len(groups), work=work * (groups[0].stop - groups[0].start))
    if not weight_grad:
        return dx, None
    dw2 = parts.sum(axis=0).reshape(ci, m, m, o, s, s).transpose(0, 3, 1, 4, 2, 5)
    dw = dw2.reshape(ci, o, m * s, m * s)[:, :, :k, :k]
    return dx, np.ascontiguousarray(dw)


# ------------------------------------------------------------------------------ loss
class XentSaved:
    """What the CPU loss's forward keeps for backward: ``grad``, the finished gradient
    (softmax - one_hot on counted pixels, 0 elsewhere), which the first backward scales
    in place and hands over (``grad`` is None after that); the counted pixels and a weak
    reference to the scores, to make the gradient again for a later backward (which is
    given the labels).
    Weak: holding the scores would keep the network's output alive until the next forward
    (2.5 MiB more at the peak of ``bench``'s train step), for a second backward that
    training never makes."""

    __slots__ = ("grad", "_scores", "counted")

    def __init__(self, grad, scores, counted):
        self.grad, self.counted = grad, counted
        self._scores = weakref.ref(scores)

    def scores(self):
        """The scores of the forward, or None where nothing else holds them any more."""
        return self._scores()


def softmax_xent(scores, labels, ignore_index: int, counted):
    """As ``nn.loss.softmax_xent``, but what it keeps is the finished gradient
    (``XentSaved``)."""
    grad, sum_exp, picked = _xent_passes(scores, labels, counted)
    pixel_loss = np.empty(sum_exp.shape, dtype=np.result_type(scores.dtype, np.float32))
    pixel_loss[...] = (np.log(sum_exp) - picked) * counted
    return pixel_loss, XentSaved(grad, scores, counted)


def softmax_xent_totals(scores, labels, ignore_index: int):
    """The loss's forward with the layer's label checks and sums made here too
    (``nn.loss.SoftmaxCrossEntropy.forward`` calls it where it exists): -> (partial,
    saved). partial (N, 3) float64 holds each image's loss sum, labelled pixels (not
    ``ignore_index``) and out-of-range labels; the layer adds the rows up in image
    order. saved: as ``softmax_xent``'s, from the pixels whose label is a class id.

    A label is in range when, read as unsigned, it is below C: a negative one reads
    as a huge number. So three comparisons make every mask, on the whole batch at once."""
    n, c = scores.shape[:2]
    valid = labels != ignore_index
    counted = labels.view(np.dtype(f"u{labels.itemsize}")) < c
    counted &= valid
    grad, sum_exp, picked = _xent_passes(scores, labels, counted)
    partial = np.empty((n, 3), dtype=np.float64)
    pixel_loss = (np.log(sum_exp) - picked) * counted
    pixel_loss.reshape(n, -1).sum(axis=1, dtype=np.float64, out=partial[:, 0])
    valid.reshape(n, -1).sum(axis=1, out=partial[:, 1])
    partial[:, 2] = partial[:, 1] - counted.reshape(n, -1).sum(axis=1)
    return partial, XentSaved(grad, scores, counted)


def _xent_passes(scores, labels, counted):
    """The loss's passes over the scores: -> grad (softmax - one_hot on counted pixels, 0
    elsewhere), sum_exp (N, H, W) (of the exponentials of the scores shifted by each
    pixel's maximum) and picked (N, H, W) (each pixel's shifted own score).

    Each pixel's own class is read and written through flat indices,
    (image*C + label)*P + pixel: one gather and one scatter per block. The blocks of
    images are one per thread of the pool (``_thread_blocks``): every value here is a
    pixel's own, so no blocking changes one. A piece makes only the passes over its
    block; the indices and the sums over the small (N, H, W) arrays are made before and
    after, once for the batch (a few calls, not a few per block)."""
    n, c, h, w = scores.shape
    p = h * w
    own = np.zeros((n, p), dtype=np.intp)  # class 0 where not counted
    labels, where = labels.reshape(n, p), counted.reshape(n, p)  # a counted label is < C:
    np.multiply(labels, p, out=own, where=where, dtype=np.intp, casting="unsafe")  # any type
    own += _first_indices(n, c, p)
    own, use = own.reshape(-1), counted.reshape(-1)
    picked = np.empty((n, h, w), dtype=scores.dtype)
    grad = BUFFERS.take(scores.shape, scores.dtype)  # the shifted scores; becomes the gradient
    flat, from_scores, into_picked = grad.reshape(-1), scores.reshape(-1), picked.reshape(-1)
    top, sum_exp, scale = (np.empty((n, 1, h, w), dtype=scores.dtype) for _ in range(3))
    blocks = _thread_blocks(n, LOSS_PASSES * c * p)

    def piece(i):
        b = blocks[i]
        g, mine = grad[b], slice(b.start * p, b.stop * p)
        np.take(from_scores, own[mine], out=into_picked[mine])
        np.max(scores[b], axis=1, keepdims=True, out=top[b])
        np.subtract(scores[b], top[b], out=g)
        np.exp(g, out=g)
        np.sum(g, axis=1, keepdims=True, out=sum_exp[b])
        np.divide(counted[b][:, None], sum_exp[b], out=scale[b])
        g *= scale[b]  # softmax, 0 where not counted
        flat[own[mine]] -= use[mine]  # minus the one-hot

    run(piece, len(blocks))
    picked -= top[:, 0]  # the same subtraction as the shifted scores'
    return grad, sum_exp[:, 0], picked


@functools.lru_cache(maxsize=8)
def _first_indices(n: int, c: int, p: int):
    """The flat index of class 0 of every pixel of an (N, C, P) array, (N, P), read-only:
    made once a shape."""
    first = np.arange(n, dtype=np.intp)[:, None] * (c * p) + np.arange(p, dtype=np.intp)
    first.setflags(write=False)
    return first


def softmax_xent_backward(saved: XentSaved, labels, ignore_index: int, scale: float):
    """dscores = the gradient the forward finished, times ``scale``: scaled in place (in
    blocks of images, one per thread of the pool) and handed over, so no buffer is
    written but the one returned. A later backward of the same forward makes the
    gradient again from the scores, while they exist."""
    grad = saved.grad
    if grad is None:  # handed over by an earlier backward
        scores = saved.scores()
        if scores is None:
            raise RuntimeError(
                "SoftmaxCrossEntropy.backward: an earlier backward took this forward's "
                "gradient and its scores are gone; call forward again"
            )
        grad = _xent_passes(scores, labels, saved.counted)[0]
    saved.grad = None
    blocks = _thread_blocks(grad.shape[0], 2 * grad[0].size)
    scale = grad.dtype.type(scale)
    run(lambda i: np.multiply(grad[blocks[i]], scale, out=grad[blocks[i]]), len(blocks))
    return grad


# ------------------------------------------------------------- pooling and ReLU
def _thread_blocks(n: int, per_image: int) -> list:
    """Blocks of images for work whose every value is a pixel's own (the loss): one per
    thread the pool runs a job on now, fewer where a block would move fewer than
    ELEMENTWISE_WORK values (``per_image`` an image). How the batch is cut changes no
    value here, so the blocks may follow the thread count."""
    count = min(n, pool_threads(), max(1, n * per_image // max(1, ELEMENTWISE_WORK)))
    return _blocks(n, count, 1)


def _image_blocks(n: int, per_image: int):
    """Blocks of images for an elementwise layer to run on the pool (at least MIN_PIECES
    where the batch has that many), or None where a block would move fewer than
    ELEMENTWISE_WORK values (``per_image`` an image): then the whole batch in one go is
    faster than the same calls block by block in one thread."""
    blocks = _blocks(n, MIN_PIECES, 1)
    if len(blocks) < 2 or per_image * blocks[0].stop < ELEMENTWISE_WORK:
        return None
    return blocks


def max_pool2d(x, k: int, s: int, p: int, out_h: int, out_w: int):
    """As ``nn.pool.max_pool2d``: ``pool.max_pool2d``, on blocks of images where they pay."""
    n, c = x.shape[:2]
    blocks = _image_blocks(n, 3 * k * k * x[0].size)
    if blocks is None:
        return tiled.max_pool2d(x, k, s, p, out_h, out_w)
    y = np.empty((n, c, out_h, out_w), dtype=x.dtype)
    arg = np.empty((n, c, out_h, out_w), dtype=tiled.arg_dtype(np, k))

    def piece(i):
        b = blocks[i]
        y[b], arg[b] = tiled.max_pool2d(x[b], k, s, p, out_h, out_w)

    run(piece, len(blocks))
    return y, arg


def max_pool2d_backward(dy, arg, x_shape, k: int, s: int, p: int):
    """As ``nn.pool.max_pool2d_backward``: ``pool.max_pool2d_backward``, on blocks of
    images where they pay."""
    n, c, h, w = x_shape
    blocks = _image_blocks(n, 3 * c * h * w)
    if blocks is None:
        return tiled.max_pool2d_backward(dy, arg, x_shape, k, s, p)
    dx = np.empty(x_shape, dtype=dy.dtype)

    def piece(i):
        b = blocks[i]
        dx[b] = tiled.max_pool2d_backward(dy[b], arg[b], (b.stop - b.start, c, h, w), k, s, p)

    run(piece, len(blocks))
    return dx


def relu(x):
    """As ``nn.relu.relu`` (y = x * (x > 0), and the mask), on blocks of images where
    they pay."""
    blocks = _image_blocks(x.shape[0], 3 * x[0].size) if x.ndim else None
    if blocks is None:
        return plain_relu.relu(x)
    y, mask = np.empty_like(x), np.empty(x.shape, dtype=bool)

    def piece(i):
        b = blocks[i]
        np.greater(x[b], 0, out=mask[b])
        np.multiply(x[b], mask[b], out=y[b])

    run(piece, len(blocks))
    return y, mask


def relu_backward(dy, mask):
    """As ``nn.relu.relu_backward`` (dx = dy * mask), on blocks of images where they pay."""
    blocks = _image_blocks(dy.shape[0], 3 * dy[0].size) if dy.ndim else None
    if blocks is None:
        return plain_relu.relu_backward(dy, mask)
    dx = np.empty_like(dy)
    run(lambda i: np.multiply(dy[blocks[i]], mask[blocks[i]], out=dx[blocks[i]]), len(blocks))
    return dx
