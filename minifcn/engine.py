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
    return as_numpy(_device_scores(model, images, device))


def predict_labels(model, images, device: str = "cpu") -> np.ndarray:
    """images float32 (N, 3, H, W) -> predicted class ids, NumPy int32 (N, H, W).

    The arg-max is taken where the scores are (on the GPU for ``device="gpu"``),
    so only the class ids (4 bytes a pixel) are copied back, not C float scores.
    """
    scores = _device_scores(model, images, device)
    return as_numpy(scores.argmax(axis=1).astype("int32"))


def _device_scores(model, images, device: str):
    """The model's scores for ``images``, left on ``device``, cropped to (N, C, H, W)."""
    n, _, h, w = images.shape
    ph, pw = _next_supported(model, h), _next_supported(model, w)
    if (ph, pw) != (h, w):
        padded = np.zeros((n, 3, ph, pw), dtype=images.dtype)
        padded[:, :, :h, :w] = as_numpy(images)
        images = padded
    scores = model(to_device(images, device))
    return scores[:, :, :h, :w]


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
        pred = predict_labels(model, images, device)
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
    """uint8 (H, W, 3) RGB image -> predicted class ids int32 (H, W)."""
    model.eval()
    x = normalize(image_uint8)[None]
    return predict_labels(model, x, device)[0]
