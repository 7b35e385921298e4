"""Per-pixel softmax cross-entropy with an ignore label."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import as_numpy, cuda_kernels_enabled, get_array_module
from .checks import check_float, check_nchw
from .module import Module


class _Saved(NamedTuple):
    """What forward keeps for backward. ``probs`` (plain path) or ``scores`` + ``lse``
    (CUDA kernel path, which recomputes the softmax instead of storing it)."""

    probs: object  # (N, C, H, W) softmax, or None on the kernel path
    scores: object  # (N, C, H, W), kernel path only
    lse: object  # (N, H, W) log-sum-exp, kernel path only
    labels: object  # (N, H, W) labels; ignored pixels are not counted
    divisor: float  # the loss was divided by this


class SoftmaxCrossEntropy(Module):
    """The FCN training loss: a softmax over classes at every pixel, then -log p(label).

    ``forward(scores (N, C, H, W) float, labels (N, H, W) int) -> float``.
    Pixels whose label is ``ignore_index`` (255 = VOC "void") add nothing.
    ``reduction="mean"`` divides by the number of pixels that are not ignored;
    "sum" does not divide. When every pixel is ignored the loss is 0 and the
    gradient is zero (never NaN).

    ``backward(dloss=1.0) -> dscores (N, C, H, W)`` = (softmax - one_hot) on the
    counted pixels, zero on ignored ones, divided as the loss was.

    Stability: scores are shifted by their per-pixel maximum before exp
    (log-sum-exp), so large scores cannot overflow.

    On the GPU the forward waits for the device once: the loss, the number of
    counted pixels and the number of out-of-range labels come back together.
    """

    def __init__(self, ignore_index: int = 255, reduction: str = "mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(
                f"SoftmaxCrossEntropy: reduction must be 'mean' or 'sum', got {reduction!r}"
            )
        self.ignore_index = ignore_index
        self.reduction = reduction
        self._saved = None

    def forward(self, scores, labels):
        check_nchw(scores, "SoftmaxCrossEntropy (scores)")
        check_float(scores, "SoftmaxCrossEntropy (scores)")
        n, c, h, w = scores.shape
        if tuple(labels.shape) != (n, h, w):
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must have shape (N, H, W) = {(n, h, w)} to match "
                f"scores {tuple(scores.shape)}, got {tuple(labels.shape)}"
            )
        if labels.dtype.kind not in "iu":
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must be integers, got dtype {labels.dtype}"
            )
        if get_array_module(scores) is not get_array_module(labels):
            raise TypeError(
                "SoftmaxCrossEntropy: scores and labels must be on the same device, got "
                f"{type(scores).__module__} scores and {type(labels).__module__} labels"
            )
        xp = get_array_module(scores)
        valid = labels != self.ignore_index
        bad = valid & ((labels < 0) | (labels >= c))
        if xp is not np and cuda_kernels_enabled():
            from .cuda_kernels import softmax_xent_forward_gpu

            lse, pixel_loss = softmax_xent_forward_gpu(scores, labels, self.ignore_index)
            saved = (None, scores, lse)
        else:
            # log p(label) = shifted[label] - log(sum exp(shifted)), shifted = scores - max
            counted = valid & ~bad
            index = xp.where(counted, labels, 0)[:, None].astype(xp.int64)  # (N, 1, H, W)
            probs = scores - scores.max(axis=1, keepdims=True)  # shifted, exp'd in place
            picked = xp.take_along_axis(probs, index, axis=1)[:, 0]
            xp.exp(probs, out=probs)
            sum_exp = probs.sum(axis=1, keepdims=True)
            pixel_loss = (xp.log(sum_exp[:, 0]) - picked) * counted
            probs /= sum_exp
            saved = (probs, None, None)
        # One copy to the host for the three numbers it needs.
        totals = xp.stack(
            [
                pixel_loss.sum(dtype=xp.float64),
                valid.sum(dtype=xp.float64),
                bad.sum(dtype=xp.float64),
            ]
        )
        loss_sum, count, n_bad = (float(v) for v in as_numpy(totals))
        if n_bad:
            value = int(as_numpy(labels[bad].ravel()[:1])[0])
            raise ValueError(
                f"SoftmaxCrossEntropy: label value {value} is out of range for {c} classes "
                f"(expected 0..{c - 1} or ignore_index {self.ignore_index})"
            )
        divisor = max(count, 1.0) if self.reduction == "mean" else 1.0
        self._saved = _Saved(*saved, labels, divisor)
        return loss_sum / divisor

    def backward(self, dloss: float = 1.0):
        """dloss (a float) -> dscores (N, C, H, W), same dtype as the scores."""
        if self._saved is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward")
        probs, scores, lse, labels, divisor = self._saved
        scale = dloss / divisor
        if probs is None:
            from .cuda_kernels import softmax_xent_backward_gpu

            return softmax_xent_backward_gpu(scores, lse, labels, self.ignore_index, scale)
        xp = get_array_module(probs)
        c = probs.shape[1]
        # (softmax - one_hot) * weight, with weight = dloss / divisor, 0 on ignored pixels
        weight = ((labels != self.ignore_index) * probs.dtype.type(scale))[:, None]
        one_hot = labels[:, None] == xp.arange(c).reshape(1, c, 1, 1)
        return (probs - one_hot) * weight

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
