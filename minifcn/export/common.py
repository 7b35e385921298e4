"""What the exporters share: the error type, optional imports, checks, side ranges."""

from __future__ import annotations

import importlib
from functools import reduce

import numpy as np

from ..backend import as_numpy
from ..storage.npz import nonfinite_arrays

FORMATS = ("onnx", "safetensors")
INSTALL_HINT = "pip install 'minifcn[export]'"


class ExportError(ValueError):
    """A model, checkpoint or file that cannot be exported or run; the message says why."""


def require(name: str):
    """Import an optional package, or raise ExportError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        top = name.split(".")[0]
        raise ExportError(f"the {top} package is not installed; {INSTALL_HINT}") from None


def refuse_nonfinite(model) -> None:
    """Raise ExportError naming the first parameter with a NaN or infinite value
    (``storage.npz.nonfinite_arrays`` finds it)."""
    bad = nonfinite_arrays(model)
    if bad:
        data = as_numpy(dict(model.named_parameters())[bad[0]].data)
        nan, inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
        raise ExportError(f"parameter {bad[0]} has non-finite values ({nan} NaN, {inf} inf)")


def layer(model, name: str):
    """The layer called ``name`` in ``model.graph()`` (dotted names reach nested modules)."""
    return reduce(getattr, name.split("."), model)


def default_size(model) -> tuple[int, int]:
    """A square input the model accepts: the first supported side from 64 on."""
    side = next(s for s in model.supported_sizes(512) if s >= 64)
    return side, side


def ranges(values) -> str:
    """[1, 2, 3, 7, 8] -> "1-3, 7-8"."""
    out, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}-{v}" if v != start else f"{v}")
            start = None
    return ", ".join(out)


def parse_ranges(text: str) -> list:
    """ "1-3, 7" -> [(1, 3), (7, 7)]."""
    spans = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        spans.append((int(lo), int(hi or lo)))
    return spans
