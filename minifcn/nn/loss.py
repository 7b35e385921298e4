"""Per-pixel softmax cross-entropy with an ignore label."""

from __future__ import annotations

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
        bad = valid & ((labels < 0) | (labels >= c))
        if bool(bad.any()):
            value = int(labels[bad].ravel()[0])
            raise ValueError(
                f"SoftmaxCrossEntropy: label value {value} is out of range for {c} classes "
                f"(expected 0..{c - 1} or ignore_index {self.ignore_index})"
            )
        safe = xp.where(valid, labels, 0)
        shifted = scores - scores.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        # log p(label) = shifted[label] - log(sum exp(shifted))
        picked = xp.take_along_axis(shifted, safe[:, None].astype(xp.int64), axis=1)[:, 0]
        log_p = picked - xp.log(sum_exp[:, 0])
        count = int(valid.sum())
        total = -(log_p * valid).sum()
        divisor = max(count, 1) if self.reduction == "mean" else 1
        self._cache = (exp / sum_exp, safe, valid, divisor)
        return float(total) / divisor

    def backward(self, dloss: float = 1.0):
        probs, safe, valid, divisor = self._cache
        xp = get_array_module(probs)
        c = probs.shape[1]
        one_hot = safe[:, None] == xp.arange(c).reshape(1, c, 1, 1)
        scale = probs.dtype.type(dloss / divisor)
        return (probs - one_hot) * (valid[:, None] * scale)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
