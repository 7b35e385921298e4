"""What the notebooks share: small helpers (timing, softmax, legends, boundary bands).

The notebooks in ``notebooks/`` import from here instead of repeating code as text.
The graders of their exercises are in ``graders.py``; the drawings (the network as a
figure, score maps) in ``draw.py``.
"""

from __future__ import annotations

import time

import numpy as np

from minifcn.analysis.oracle import label_edges

# ----------------------------------------------------------------------------- helpers


def best_time(fn, repeat: int = 5) -> float:
    """The shortest of ``repeat`` wall-clock times of ``fn()``, in seconds.

    The minimum, not the mean: on a shared machine the slow runs are the ones
    another program interrupted, and the fastest run is the best estimate of the
    code's own cost.
    """
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def softmax(scores, axis: int):
    """Numerically stable softmax of a NumPy array along ``axis``."""
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def class_legend(target, names=None, **kwargs):
    """Add a legend of class colours (the palette ``colorize`` uses) to a figure or axes.

    ``names`` defaults to the shapes classes. Extra keyword arguments go to ``legend``.
    """
    from matplotlib.patches import Patch

    from minifcn.data import CLASS_NAMES, PALETTE

    names = CLASS_NAMES if names is None else names
    handles = [
        Patch(facecolor=PALETTE[i] / 255.0, edgecolor="0.5", label=f"{i} {name}")
        for i, name in enumerate(names)
    ]
    kwargs.setdefault("ncol", len(names))
    kwargs.setdefault("frameon", False)
    if hasattr(target, "add_subplot"):  # a Figure: just below its bottom row of panels
        bottom = min((ax.get_position().y0 for ax in target.axes), default=0.0)
        kwargs.setdefault("loc", "upper center")
        kwargs.setdefault("bbox_to_anchor", (0.5, bottom - 0.01))
    return target.legend(handles=handles, **kwargs)


def near_boundary(labels, width: int = 2) -> np.ndarray:
    """Boolean mask of the pixels within ``width`` pixels (4-neighbour steps) of a label edge.

    ``labels``: int (N, H, W). A pixel is on an edge when a 4-neighbour has another label.
    """
    edge = label_edges(labels)
    for _ in range(width - 1):  # grow the band by one pixel each time
        grown = edge.copy()
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        grown[:, :, 1:] |= edge[:, :, :-1]
        grown[:, :, :-1] |= edge[:, :, 1:]
        edge = grown
    return edge
