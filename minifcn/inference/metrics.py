"""Segmentation metrics of Long et al. (FCN, 2015), from one confusion matrix.

Let n_ij be the number of pixels of class i predicted to be class j,
t_i = sum_j n_ij the number of pixels of class i, and n_cl the number of
classes. Then

* pixel accuracy     = sum_i n_ii / sum_i t_i
* mean accuracy      = (1/n_cl) sum_i n_ii / t_i
* mean IU            = (1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
* frequency weighted = (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

The matrix is summed over the whole evaluation set before any ratio is taken
(not averaged per image), as the FCN reference code does.

Classes that never occur: a class's accuracy is undefined (NaN) when it has no
ground-truth pixels, and its IU is undefined when it has none in the ground
truth and none in the prediction. The means skip undefined entries (nanmean),
so n_cl counts the classes for which the ratio is defined. A class predicted
but absent from the ground truth therefore counts in mean IU with IU 0 — a
false alarm is penalised — while it cannot have an accuracy.
"""

from __future__ import annotations

import numpy as np

from minifcn.backend import as_numpy, get_array_module


def confusion_matrix(pred, label, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Count (ground truth, prediction) pairs over all pixels that are not ignored.

    Args:
        pred: int (N, H, W) or (H, W): predicted class ids in [0, num_classes).
        label: int, same shape: ground-truth ids in [0, num_classes) or ``ignore_index``.
        num_classes: C.

    Returns:
        int64 (C, C) NumPy array: entry [i, j] = pixels of class i predicted as j.

    Works on NumPy or CuPy inputs (the counting happens where the arrays are).
    """
    xp = get_array_module(pred, label)
    pred, label = xp.asarray(pred), xp.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {pred.shape} != label shape {label.shape}")
    for name, a in (("prediction", pred), ("label", label)):
        if a.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integer class ids, got dtype {a.dtype}")
    valid = label != ignore_index
    gt, pr = label[valid].astype(xp.int64), pred[valid].astype(xp.int64)
    for name, a in (("label", gt), ("prediction", pr)):
        bad = (a < 0) | (a >= num_classes)
        if bool(bad.any()):
            value = int(as_numpy(a[bad][:1])[0])
            extra = f" or the ignore label {ignore_index}" if name == "label" else ""
            raise ValueError(f"{name} value {value} is not a class id in [0, {num_classes}){extra}")
    counts = xp.bincount(gt * num_classes + pr, minlength=num_classes * num_classes)
    return as_numpy(counts).astype(np.int64).reshape(num_classes, num_classes)


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN (without a warning) when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den == 0."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_confusion(hist: np.ndarray) -> dict:
    """The four FCN scores and per-class values from a (C, C) confusion matrix.

    Returns a dict: pixel_accuracy, mean_accuracy, mean_iu, fw_iu (floats) and
    per_class_iu, per_class_accuracy (lists of C floats, NaN where undefined).
    """
    hist = np.asarray(hist, dtype=np.float64)  # exact for counts below 2**53
    n_ii = np.diag(hist)
    t_i = hist.sum(axis=1)  # ground-truth pixels per class
    p_i = hist.sum(axis=0)  # predicted pixels per class
    total = hist.sum()
    iu = _ratio(n_ii, t_i + p_i - n_ii)
    acc = _ratio(n_ii, t_i)
    freq = t_i / total if total > 0 else np.zeros_like(t_i)
    return {
        "pixel_accuracy": float(n_ii.sum() / total) if total > 0 else float("nan"),
        "mean_accuracy": _nanmean(acc),
        "mean_iu": _nanmean(iu),
        "fw_iu": float(np.nansum(freq * iu)) if total > 0 else float("nan"),
        "per_class_iu": iu.tolist(),
        "per_class_accuracy": acc.tolist(),
    }


class SegmentationMetrics:
    """Accumulate one confusion matrix over a whole evaluation set, then score it.

    Usage::

        metrics = SegmentationMetrics(num_classes=21, class_names=VOC_CLASS_NAMES)
        for images, labels in batches:
            metrics.update(model_prediction(images), labels)
        print(metrics.format_table())
        scores = metrics.compute()  # see scores_from_confusion
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names=None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.class_names = (
            tuple(class_names)
            if class_names is not None
            else tuple(f"class_{i}" for i in range(num_classes))
        )
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, label) -> None:
        """Add predictions int (N, H, W) or (H, W) against labels of the same shape."""
        self.confusion += confusion_matrix(pred, label, self.num_classes, self.ignore_index)

    def compute(self) -> dict:
        """Scores of everything accumulated; see ``scores_from_confusion``."""
        return scores_from_confusion(self.confusion)

    def format_table(self) -> str:
        """A per-class IU / accuracy table followed by the four summary scores."""
        s = self.compute()
        width = max(12, *(len(n) for n in self.class_names))
        lines = [f"{'class':<{width}}  {'IU':>6}  {'acc':>6}", "-" * (width + 16)]
        for name, iu, acc in zip(
            self.class_names, s["per_class_iu"], s["per_class_accuracy"], strict=True
        ):
            lines.append(f"{name:<{width}}  {_pct(iu)}  {_pct(acc)}")
        lines.append("-" * (width + 16))
        for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu"):
            lines.append(f"{key:<{width}}  {_pct(s[key])}")
        return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{'-':>6}" if np.isnan(x) else f"{100 * x:6.2f}"
