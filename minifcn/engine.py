"""What training, evaluation and prediction share: batches in, scores out, metrics."""

from __future__ import annotations

import numpy as np

from .backend import as_numpy, to_device
from .data import iterate_batches
from .data.transforms import normalize
from .metrics import SegmentationMetrics


def predict_scores(model, images, device: str = "cpu"):
    """images float32 (N, 3, H, W), mean-subtracted -> class scores NumPy (N, C, H, W).

    For a backbone that supports only some input sizes (the mini one), the
    batch is padded (with the mean, i.e. zeros) up to the next supported size
    and the scores are cropped back.
    """
    n, _, h, w = images.shape
    ph, pw = _next_supported(model, h), _next_supported(model, w)
    if (ph, pw) != (h, w):
        padded = np.zeros((n, 3, ph, pw), dtype=images.dtype)
        padded[:, :, :h, :w] = as_numpy(images)
        images = padded
    scores = model(to_device(images, device))
    return as_numpy(scores[:, :, :h, :w])


def _next_supported(model, side: int) -> int:
    for s in range(side, side + 64):
        try:
            model._walk_sizes(s)
            return s
        except ValueError:
            continue
    model.blob_sizes(side)  # raises with the explanation
    return side


def evaluate(model, dataset, batch_size: int = 1, device: str = "cpu", progress=None) -> dict:
    """Run ``model`` in eval mode over ``dataset``; one confusion matrix for the whole set.

    Returns the dict of ``SegmentationMetrics.compute()`` plus ``"metrics"`` (the
    accumulator, for per-class tables) and ``"pred_counts"`` (pixels predicted
    per class, to spot a collapse onto one class).
    """
    model.eval()
    metrics = SegmentationMetrics(dataset.num_classes, dataset.ignore_index, dataset.class_names)
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    batches = iterate_batches(dataset, batch_size)
    if progress is not None:
        batches = progress(batches)
    for images, labels in batches:
        pred = predict_scores(model, images, device).argmax(axis=1)
        metrics.update(pred, labels)
        counts += np.bincount(pred.ravel(), minlength=dataset.num_classes)
    result = metrics.compute()
    result["metrics"] = metrics
    result["pred_counts"] = counts
    return result


def collapsed(pred_counts, threshold: float = 0.99) -> bool:
    """True when one class takes at least ``threshold`` of all predicted pixels."""
    total = pred_counts.sum()
    return bool(total > 0 and pred_counts.max() >= threshold * total)


def segment_image(model, image_uint8, device: str = "cpu") -> np.ndarray:
    """uint8 (H, W, 3) RGB image -> predicted class ids uint8/int64 (H, W)."""
    model.eval()
    x = normalize(image_uint8)[None]
    return predict_scores(model, x, device)[0].argmax(axis=0)
