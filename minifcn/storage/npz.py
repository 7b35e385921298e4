"""``.npz`` files of named arrays plus a JSON metadata string, written atomically.

The arrays are stored under their names, the metadata under ``__meta__``; a
reader gets ``(arrays, meta)`` back and a clear ``ValueError`` for a damaged file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .atomic import write_atomic

META_KEY = "__meta__"
EXTRA_PREFIX = "__extra__/"


def nonfinite_arrays(arrays: dict) -> list[str]:
    """Names of the floating-point arrays in ``arrays`` that hold NaN or inf."""
    bad = []
    for name, v in arrays.items():
        v = np.asarray(v) if not hasattr(v, "dtype") else v
        if v.dtype.kind in "fc" and not bool(_all_finite(v)):
            bad.append(name)
    return bad


def _all_finite(v):
    mod = type(v).__module__.split(".")[0]
    if mod == "cupy":
        import cupy

        return cupy.isfinite(v).all().item()
    return np.isfinite(v).all()


def _npz_writer(arrays: dict, meta: dict | None):
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[META_KEY] = np.array(json.dumps(meta or {}))
    return lambda f: np.savez(f, **payload)


def save_npz_atomic(path, arrays: dict, meta: dict | None = None) -> Path:
    """Write ``arrays`` (name -> array) and ``meta`` (JSON-able) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, _npz_writer(arrays, meta))


def load_npz(path) -> tuple[dict, dict]:
    """Read a file written by ``save_npz_atomic``: (arrays, meta).

    FileNotFoundError for a missing file; ValueError (naming the file) for one that is
    truncated, corrupt or not an ``.npz`` at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop(META_KEY))) if META_KEY in arrays else {}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as err:
        raise ValueError(f"cannot read checkpoint {path} (damaged or not an .npz): {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"cannot read checkpoint {path}: its metadata is not a JSON object")
    return arrays, meta
