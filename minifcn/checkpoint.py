"""Saving and loading ``.npz`` checkpoints, atomically.

A checkpoint is one ``.npz`` file: every parameter under its ``state_dict``
name, plus a JSON string under ``__meta__`` (model spec, epoch, ...) and any
extra arrays (optimiser state) under ``__extra__/<name>``. Writes go to a
temporary file in the same folder that is then renamed over the target, so a
crash never leaves a half-written checkpoint and a good one is never lost.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

META_KEY = "__meta__"
EXTRA_PREFIX = "__extra__/"


def save_npz_atomic(path, arrays: dict, meta: dict | None = None) -> Path:
    """Write ``arrays`` (name -> array) and ``meta`` (JSON-able) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[META_KEY] = np.array(json.dumps(meta or {}))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_npz(path) -> tuple[dict, dict]:
    """Read a file written by ``save_npz_atomic``: (arrays, meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    meta = json.loads(str(arrays.pop(META_KEY))) if META_KEY in arrays else {}
    return arrays, meta


def save_checkpoint(path, model, meta: dict | None = None, extra: dict | None = None) -> Path:
    """Save a model's ``state_dict`` and ``spec()`` (plus ``meta`` and ``extra`` arrays)."""
    arrays = dict(model.state_dict())
    for k, v in (extra or {}).items():
        arrays[EXTRA_PREFIX + k] = v
    info = {"spec": model.spec() if hasattr(model, "spec") else None, **(meta or {})}
    return save_npz_atomic(path, arrays, info)


def load_checkpoint(path) -> tuple[dict, dict, dict]:
    """(state_dict, meta, extra) from a file written by ``save_checkpoint``."""
    arrays, meta = load_npz(path)
    state = {k: v for k, v in arrays.items() if not k.startswith(EXTRA_PREFIX)}
    extra = {k[len(EXTRA_PREFIX) :]: v for k, v in arrays.items() if k.startswith(EXTRA_PREFIX)}
    return state, meta, extra


def load_model(path, expect: str | None = None):
    """Rebuild the model stored in a checkpoint and load its weights.

    ``expect`` ("fcn8s", ...) makes a checkpoint of another model an error.
    """
    from .models import model_from_spec

    state, meta, _ = load_checkpoint(path)
    spec = meta.get("spec")
    if not spec:
        raise ValueError(f"{path} is not a minifcn model checkpoint (no model spec inside)")
    if expect is not None and spec["model"] != expect:
        raise ValueError(f"{path} holds a {spec['model']} checkpoint, but {expect} was asked for")
    model = model_from_spec(spec)
    try:
        model.load_state_dict(state)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return model, meta
