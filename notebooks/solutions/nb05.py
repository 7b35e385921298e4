"""Notebook 05, exercises: the four FCN metrics from a confusion matrix; FCN-16s from FCN-32s."""

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


def fcn16s_from_fcn32s(fcn32s):
    """A new FCN16s that starts where ``fcn32s`` ended.

    Carried over: the backbone (conv1_1 ... fc7) and score_fr, the layers both networks
    have with the same shapes and the same job. New: score_pool4 (zero, as built: the
    skip adds nothing until training moves it, so the new network first predicts what
    FCN-32s did, through its own two bilinear upsamplings instead of the one 64/32
    upsampling, which has no counterpart) and upscore2 / upscore16 (bilinear, as built).
    """
    from minifcn.models import FCN16s

    net = FCN16s(fcn32s.num_classes, fcn32s.config)
    theirs = dict(fcn32s.named_parameters())
    for name, p in net.named_parameters():
        layer = name.rsplit(".", 1)[0]
        if layer in fcn32s.backbone or layer == "score_fr":
            p.data[...] = theirs[name].data
    return net
