"""The oracle of a stride-s score grid: the best a network with that output grid can do.

It takes the score map a network upsamples last (FCN-32s: score_fr, stride 32;
FCN-16s: fuse_pool4, 16; FCN-8s: fuse_pool3, 8), with the cells and positions the
network's geometry gives it for the image size, and finds the class scores for
those cells whose bilinear upsampling fits the labels best. What it misses is what
a score map of that stride cannot draw: corners, thin parts, notches, small
objects. It is not a strict bound (a network learns its upsampling filter).

Also here: the boundary measure the results table uses, mean IU counted only on
pixels within a few pixels of a label edge, where coarse predictions fail first.
``python -m minifcn.oracle`` prints the table.
"""

from __future__ import annotations

import numpy as np

from minifcn.inference.metrics import SegmentationMetrics


def grid_centres(n_pixels: int, stride: int) -> np.ndarray:
    """Cell centres of a plain stride-s grid over ``n_pixels``: cells tile the image from
    pixel 0, plus one cell beyond each end so that the border can interpolate."""
    n_cells = -(-n_pixels // stride)
    return stride * np.arange(-1, n_cells + 1) + (stride - 1) / 2


def model_grid(model, side: int) -> tuple[int, np.ndarray]:
    """(stride, cell centres in image pixels) of the score map ``model`` upsamples last.

    That map is the input of the last ``ConvTranspose2d`` in ``model.graph()``
    (score_fr for FCN-32s, fuse_pool4 for FCN-16s, fuse_pool3 for FCN-8s); its
    coordinate map and its size for an image side of ``side`` give the centres.
    """
    from minifcn.nn import ConvTranspose2d

    ups = [s for s in model.graph() if isinstance(getattr(model, s[1]), ConvTranspose2d)]
    _, layer, blob, *_ = ups[-1]
    cmap = model.coordinate_maps()[blob]
    n = model.blob_sizes(side)[blob]
    return int(getattr(model, layer).stride), float(cmap.scale) * np.arange(n) + float(cmap.shift)


def _hat_matrix(n_out: int, centres, stride: int) -> np.ndarray:
    """(n_out, len(centres)) bilinear weights from cell centres to pixel centres.

    Pixel y takes weight 1 - |y - c|/s from the cell centred at c when |y - c| < s:
    the kernel of a bilinear ``ConvTranspose2d(kernel=2s, stride=s)``.
    """
    d = np.abs(np.arange(n_out)[:, None] - np.asarray(centres, dtype=float)[None, :])
    return np.maximum(0.0, 1.0 - d / stride).astype(np.float32)


def _box_matrix(n_out: int, centres, stride: int) -> np.ndarray:
    """(len(centres), n_out): 1 where pixel y lies in the s-pixel cell around centre c."""
    d = np.arange(n_out)[None, :] - np.asarray(centres, dtype=float)[:, None]
    return ((d >= -stride / 2) & (d < stride / 2)).astype(np.float32)


def oracle_scores(
    labels,
    stride: int,
    num_classes: int,
    ignore_index: int = 255,
    centres=None,
    fit: bool = True,
    steps: int = 100,
) -> np.ndarray:
    """The best class scores on a stride-``stride`` grid, upsampled bilinearly to pixels.

    Args:
        labels: int (N, H, W) ground-truth class ids (``ignore_index`` counts for no class).
        stride: the grid step s in pixels.
        centres: (rows, cols) cell centres in image pixels (e.g. from ``model_grid``);
            default: a plain grid from pixel 0 (``grid_centres``).
        fit: False scores each class by its share of the s x s cell around each centre.
            True (the default) starts there and then fits the coarse scores z: z
            minimises the softmax cross-entropy of the upsampled scores U z against the
            labels. U is linear, so the problem is convex; ``steps`` Adam steps solve it
            closely enough. Shares alone are not a bound: a network beats them easily.

    Returns:
        float32 (N, num_classes, H, W) scores; their arg-max is the oracle's prediction.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be (N, H, W), got shape {labels.shape}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    _, h, w = labels.shape
    cy, cx = centres if centres is not None else (grid_centres(h, stride), grid_centres(w, stride))
    target = np.stack([labels == c for c in range(num_classes)], axis=1).astype(np.float32)
    mask = (labels != ignore_index)[:, None].astype(np.float32)
    by, bx = _box_matrix(h, cy, stride), _box_matrix(w, cx, stride)
    share = (by @ target @ bx.T) / np.maximum(by @ mask @ bx.T, 1)  # (N, C, rows, cols)
    uy, ux = _hat_matrix(h, cy, stride), _hat_matrix(w, cx, stride)
    if not fit:
        return uy @ share @ ux.T
    z = np.log(share + 0.05)
    m, v, lr = np.zeros_like(z), np.zeros_like(z), 0.5
    for t in range(1, steps + 1):  # Adam on the (convex) cross-entropy
        s = uy @ z @ ux.T
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = uy.T @ ((p - target) * mask) @ ux
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        z -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return uy @ z @ ux.T


def oracle_prediction(labels, stride: int, num_classes: int, ignore_index: int = 255, **kw):
    """int64 (N, H, W): the arg-max of ``oracle_scores``."""
    return oracle_scores(labels, stride, num_classes, ignore_index, **kw).argmax(axis=1)


def label_edges(labels) -> np.ndarray:
    """bool (N, H, W): pixels with a 4-neighbour of another label (both sides of an edge)."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    dy = labels[:, 1:, :] != labels[:, :-1, :]
    dx = labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    return edge


def boundary_band(labels, width: int) -> np.ndarray:
    """bool (N, H, W): pixels within ``width`` pixels (chessboard distance) of a label edge
    (``label_edges``)."""
    band = label_edges(labels)
    for _ in range(max(0, width - 1)):  # grow by one pixel in the 8-neighbourhood per step
        grown = band.copy()
        grown[:, 1:, :] |= band[:, :-1, :]
        grown[:, :-1, :] |= band[:, 1:, :]
        grown2 = grown.copy()
        grown2[:, :, 1:] |= grown[:, :, :-1]
        grown2[:, :, :-1] |= grown[:, :, 1:]
        band = grown2
    return band


def boundary_labels(labels, width: int, ignore_index: int = 255) -> np.ndarray:
    """A copy of ``labels`` with every pixel outside the edge band set to ``ignore_index``.

    Scoring predictions against it gives the "boundary IU": mean IU near object edges.
    """
    labels = np.asarray(labels)
    out = labels.copy()
    out[~boundary_band(labels, width)] = ignore_index
    return out


def oracle_table(
    labels, grids, num_classes: int, ignore_index: int = 255, band: int = 3, steps: int = 100
) -> list[dict]:
    """One dict per grid.

    Args:
        labels: int (N, H, W).
        grids: (name, stride, centres or None) triples; centres as from ``model_grid``
            (the same for rows and columns), None for a plain grid.

    Returns:
        dicts with name, stride, cells, mean_iu and boundary_iu (fitted scores),
        share_mean_iu (class shares, not fitted) and per_class_iu (fitted).
    """
    labels = np.asarray(labels)
    edge_labels = boundary_labels(labels, band, ignore_index)
    rows = []
    for name, stride, centres in grids:
        full = SegmentationMetrics(num_classes, ignore_index)
        edge = SegmentationMetrics(num_classes, ignore_index)
        share = SegmentationMetrics(num_classes, ignore_index)
        if centres is None:
            cy, cx = grid_centres(labels.shape[1], stride), grid_centres(labels.shape[2], stride)
        else:
            cy = cx = np.asarray(centres)
        for i in range(0, len(labels), 50):  # in chunks: the scores are (N, C, H, W)
            chunk = labels[i : i + 50]
            kw = {"centres": (cy, cx), "steps": steps}
            pred = oracle_prediction(chunk, stride, num_classes, ignore_index, **kw)
            full.update(pred, chunk)
            edge.update(pred, edge_labels[i : i + 50])
            kw["fit"] = False
            share.update(oracle_prediction(chunk, stride, num_classes, ignore_index, **kw), chunk)
        f = full.compute()
        rows.append(
            {
                "name": name,
                "stride": stride,
                "cells": f"{len(cy)}x{len(cx)}",
                "mean_iu": f["mean_iu"],
                "boundary_iu": edge.compute()["mean_iu"],
                "share_mean_iu": share.compute()["mean_iu"],
                "per_class_iu": [float(v) for v in f["per_class_iu"]],
            }
        )
    return rows


def format_oracle_table(rows, class_names, band: int = 3) -> str:
    head = (
        f"{'grid of':<10} {'stride':>6} {'cells':>6} {'mean IU':>8} {'edge IU':>8} "
        f"{'shares':>7}  " + " ".join(f"{n[:5]:>6}" for n in class_names)
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        per = " ".join(f"{100 * v:6.1f}" for v in r["per_class_iu"])
        lines.append(
            f"{r['name']:<10} {r['stride']:>6} {r['cells']:>6} {r['mean_iu']:8.3f} "
            f"{r['boundary_iu']:8.3f} {r['share_mean_iu']:7.3f}  {per}"
        )
    lines.append(
        "mean IU, edge IU, per-class IU (%): the best scores on that grid (fitted), upsampled "
        f"bilinearly; edge IU counts pixels within {band} px of a label edge; shares: mean IU "
        "when each cell just scores each class by its share of the cell (no fitting)"
    )
    return "\n".join(lines)
