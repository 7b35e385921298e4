"""Per-pixel softmax cross-entropy with an ignore label."""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from .checks import check_nchw
from .module import Module


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
    """

    def __init__(self, ignore_index: int = 255, reduction: str = "mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(
                f"SoftmaxCrossEntropy: reduction must be 'mean' or 'sum', got {reduction!r}"
            )
        self.ignore_index = ignore_index
        self.reduction = reduction
        self._cache = None

    def forward(self, scores, labels):
        check_nchw(scores, "SoftmaxCrossEntropy (scores)")
        xp = get_array_module(scores, labels)
        n, c, h, w = scores.shape
        if labels.shape != (n, h, w):
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must have shape (N, H, W) = {(n, h, w)} to match "
                f"scores {tuple(scores.shape)}, got {tuple(labels.shape)}"
            )
        if labels.dtype.kind not in "iu":
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must be integers, got dtype {labels.dtype}"
            )
        valid = labels != self.ignore_index
        safe = xp.where(valid, labels, 0)  # ignored pixels point at class 0, then count 0
        if int(safe.min()) < 0 or int(safe.max()) >= c:
            value = int(labels[valid & ((labels < 0) | (labels >= c))].ravel()[0])
            raise ValueError(
                f"SoftmaxCrossEntropy: label value {value} is out of range for {c} classes "
                f"(expected 0..{c - 1} or ignore_index {self.ignore_index})"
            )
        count = int(valid.sum())
        divisor = max(count, 1) if self.reduction == "mean" else 1
        if xp is not np:
            from .cuda_kernels import softmax_xent_forward_gpu

            lse, loss = softmax_xent_forward_gpu(scores, labels, self.ignore_index)
            self._cache = ("gpu", scores, lse, labels, divisor)
            return float(loss.sum()) / divisor
        # log p(label) = shifted[label] - log(sum exp(shifted)), shifted = scores - max
        top = scores.max(axis=1, keepdims=True)
        probs = scores - top  # shifted, then exp'd and normalised in place
        index = safe[:, None].astype(np.intp)
        picked = np.take_along_axis(probs, index, axis=1)[:, 0]
        np.exp(probs, out=probs)
        sum_exp = probs.sum(axis=1, keepdims=True)
        log_p = picked - np.log(sum_exp[:, 0])
        total = -float(log_p[valid].sum(dtype=np.float64))
        probs /= sum_exp
        self._cache = ("cpu", probs, index, valid, divisor)
        return total / divisor

    def backward(self, dloss: float = 1.0):
        """dloss (a float) -> dscores (N, C, H, W), same dtype as the scores."""
        if self._cache[0] == "gpu":
            from .cuda_kernels import softmax_xent_backward_gpu

            _, scores, lse, labels, divisor = self._cache
            return softmax_xent_backward_gpu(
                scores, lse, labels, self.ignore_index, dloss / divisor
            )
        _, probs, index, valid, divisor = self._cache
        # (softmax - one_hot) * weight, with weight = dloss / divisor, 0 on ignored pixels
        weight = (valid * (dloss / divisor)).astype(probs.dtype)[:, None]  # (N, 1, H, W)
        grad = probs * weight
        at_label = np.take_along_axis(grad, index, axis=1) - weight
        np.put_along_axis(grad, index, at_label, axis=1)
        return grad

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
