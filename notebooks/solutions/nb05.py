"""Notebook 05, exercise: the four FCN metrics from a confusion matrix."""

import numpy as np


def segmentation_scores(hist):
    """hist (C, C): hist[i, j] = pixels of class i predicted as j -> the four scores."""
    hist = np.asarray(hist, dtype=np.float64)
    correct = np.diag(hist)
    truth = hist.sum(axis=1)  # pixels of each class in the ground truth
    predicted = hist.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = correct / truth  # NaN for a class with no ground-truth pixels
        union = truth + predicted - correct
        iu = np.where(union > 0, correct / np.where(union > 0, union, 1), np.nan)
    return {
        "pixel_accuracy": correct.sum() / hist.sum(),
        "mean_accuracy": np.nanmean(accuracy),
        "mean_iu": np.nanmean(iu),
        "fw_iu": np.nansum(truth / hist.sum() * iu),
    }
