"""Per-pixel softmax cross-entropy with an ignore label."""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

from ..backend import as_numpy, get_array_module
from ..dispatch import ops_for
from .checks import check_float, check_nchw
from .module import Module


def softmax_xent(scores, labels, ignore_index: int, counted):
    """Every pixel's loss -log softmax(scores)[label], and the softmax for backward.

    Args:
        scores: (N, C, H, W) float.
        labels: (N, H, W) int.
        ignore_index: the label of pixels that add nothing (here ``counted`` says which).
        counted: (N, H, W) bool, the pixels whose label is a class id.
    Returns:
        pixel_loss: (N, H, W), 0 where not counted.
        probs: (N, C, H, W), the softmax over classes.

    log p(label) = shifted[label] - log(sum exp(shifted)), shifted = scores minus
    its per-pixel maximum, so that exp cannot overflow (log-sum-exp).
    """
    xp = get_array_module(scores)
    shifted = scores - scores.max(axis=1, keepdims=True)
    index = xp.where(counted, labels, 0)[:, None].astype(xp.int64)  # (N, 1, H, W)
    picked = xp.take_along_axis(shifted, index, axis=1)[:, 0]
    exp = xp.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    pixel_loss = (xp.log(sum_exp[:, 0]) - picked) * counted
    return pixel_loss, exp / sum_exp


def softmax_xent_backward(probs, labels, ignore_index: int, scale: float):
    """dscores (N, C, H, W) = (softmax - one_hot(label)) * scale, 0 on ignored pixels."""
    xp = get_array_module(probs)
    c = probs.shape[1]
    weight = ((labels != ignore_index) * probs.dtype.type(scale))[:, None]  # (N, 1, H, W)
    one_hot = labels[:, None] == xp.arange(c).reshape(1, c, 1, 1)
    return (probs - one_hot) * weight


# The plain functions of the loss (minifcn.dispatch chooses between them and their twins).
PLAIN = SimpleNamespace(softmax_xent=softmax_xent, softmax_xent_backward=softmax_xent_backward)


class LossCache(NamedTuple):
    """What ``SoftmaxCrossEntropy.forward`` keeps for ``backward``."""

    ops: object  # the functions that ran forward (PLAIN or an accelerated module)
    saved: object  # what ops.softmax_xent returned for backward (the softmax on the plain path)
    labels: object  # (N, H, W)
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
        self._cache = None

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
        self._cache = None  # the previous call's gradient can go (accel reuses its memory)
        ops = ops_for(scores, PLAIN)
        if hasattr(ops, "softmax_xent_totals"):  # an accelerated path that sums in its pieces
            partial, saved = ops.softmax_xent_totals(scores, labels, self.ignore_index)
            loss_sum, count, n_bad = as_numpy(partial).sum(axis=0).tolist()
        else:
            valid = labels != self.ignore_index
            bad = valid & ((labels < 0) | (labels >= c))
            pixel_loss, saved = ops.softmax_xent(scores, labels, self.ignore_index, valid & ~bad)
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
            bad = (labels != self.ignore_index) & ((labels < 0) | (labels >= c))
            value = int(as_numpy(labels[bad].ravel()[:1])[0])
            raise ValueError(
                f"SoftmaxCrossEntropy: label value {value} is out of range for {c} classes "
                f"(expected 0..{c - 1} or ignore_index {self.ignore_index})"
            )
        divisor = max(count, 1.0) if self.reduction == "mean" else 1.0
        self._cache = LossCache(ops, saved, labels, divisor)
        return loss_sum / divisor

    def backward(self, dloss: float = 1.0):
        """dloss (a float) -> dscores (N, C, H, W), same dtype as the scores."""
        ops, saved, labels, divisor = self.cached()
        return ops.softmax_xent_backward(saved, labels, self.ignore_index, dloss / divisor)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
