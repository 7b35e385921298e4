"""Saving and loading ``.npz`` checkpoints, atomically and durably.

A checkpoint is one ``.npz`` file: every parameter under its ``state_dict``
name, plus a JSON string under ``__meta__`` (model spec, epoch, ...) and any
extra arrays (optimiser state) under ``__extra__/<name>``.

Every file this module writes goes to a hidden temporary file in the same
folder (``.<name>.<random>.tmp``), which is flushed and ``fsync``-ed, then
renamed over the target, and the folder is ``fsync``-ed too: a crash or power
loss leaves either the old file or the new one, never half of one. The new
file gets the permissions the umask allows (``0666 & ~umask``), like any file
a program creates, not the ``0600`` of ``tempfile.mkstemp``.

Weights are never saved when any of them is NaN or infinite
(``NonFiniteWeights``), and ``load_model`` refuses such a file, so a diverged
run cannot leave poisoned weights behind that evaluate or predict would use.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import zipfile
from pathlib import Path

import numpy as np

META_KEY = "__meta__"
EXTRA_PREFIX = "__extra__/"
RUN_FORMAT = "minifcn-run"  # meta["format"] of a checkpoint written by minifcn.train
TMP_SUFFIX = ".tmp"


class NonFiniteWeights(ValueError):
    """Some parameters hold NaN or infinite values."""


class NotARunCheckpoint(ValueError):
    """A checkpoint without the training state that ``--resume`` needs."""


# ------------------------------------------------------------------ durable writes
def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder) -> None:
    """Make renames inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path) -> Path:
    """A fresh hidden temporary name next to ``path``: ``.<name>.<random>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def is_temporary(path) -> bool:
    """True for names made by ``temp_path`` (left behind only by a killed process)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def write_temp(path, write) -> Path:
    """Create a temporary file next to ``path``, call ``write(binary file)``, flush and
    fsync it, and return its name (not yet renamed). Removed again on any error."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def write_atomic(path, write) -> Path:
    """Write ``path`` through ``write(binary file)``: temp file, fsync, rename, fsync folder."""
    path = Path(path)
    tmp = write_temp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


# --------------------------------------------------------------------- npz files
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


# ------------------------------------------------------------------- checkpoints
def checkpoint_payload(model, meta: dict | None = None, extra: dict | None = None):
    """(arrays, meta) of a checkpoint of ``model``; NonFiniteWeights if any weight is
    NaN or infinite (nothing is written then)."""
    arrays = dict(model.state_dict())
    bad = nonfinite_arrays(arrays)
    if bad:
        raise NonFiniteWeights(
            f"{len(bad)} parameter array(s) hold NaN or infinite values ({', '.join(bad[:3])}"
            + (", ..." if len(bad) > 3 else "")
            + "); refusing to save them"
        )
    for k, v in (extra or {}).items():
        arrays[EXTRA_PREFIX + k] = v
    info = {"spec": model.spec() if hasattr(model, "spec") else None, **(meta or {})}
    return arrays, info


def checkpoint_writer(model, meta: dict | None = None, extra: dict | None = None):
    """A ``write(file)`` function for ``write_atomic``/``write_temp``, checked as
    ``checkpoint_payload`` checks (the arrays are copied to the host now)."""
    return _npz_writer(*checkpoint_payload(model, meta, extra))


def save_checkpoint(path, model, meta: dict | None = None, extra: dict | None = None) -> Path:
    """Save a model's ``state_dict`` and ``spec()`` (plus ``meta`` and ``extra`` arrays).

    Raises NonFiniteWeights, and leaves ``path`` untouched, if a weight is NaN or inf.
    """
    path = Path(path)
    writer = checkpoint_writer(model, meta, extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, writer)


def load_checkpoint(path) -> tuple[dict, dict, dict]:
    """(state_dict, meta, extra) from a file written by ``save_checkpoint``."""
    arrays, meta = load_npz(path)
    state = {k: v for k, v in arrays.items() if not k.startswith(EXTRA_PREFIX)}
    extra = {k[len(EXTRA_PREFIX) :]: v for k, v in arrays.items() if k.startswith(EXTRA_PREFIX)}
    return state, meta, extra


def check_finite(path, state: dict) -> None:
    """NonFiniteWeights naming ``path`` unless every weight in ``state`` is finite."""
    bad = nonfinite_arrays(state)
    if bad:
        raise NonFiniteWeights(
            f"{path} holds non-finite weights (NaN or inf in {len(bad)} of {len(state)} "
            f"arrays, e.g. {bad[0]}): it is not a usable model"
        )


def load_run_checkpoint(path) -> tuple[dict, dict, dict]:
    """(state_dict, meta, extra) of a checkpoint written by ``minifcn.train``.

    ValueError when the file is damaged, NotARunCheckpoint when it is a model
    checkpoint without the run's arguments and training state (``--resume``
    cannot continue from it), NonFiniteWeights when a weight is NaN or inf.
    """
    state, meta, extra = load_checkpoint(path)
    missing = [k for k in ("spec", "args", "state") if not meta.get(k)]
    missing += [k for k in ("optimizer_scalars", "dropout_rng") if k not in meta]
    if meta.get("format", RUN_FORMAT) != RUN_FORMAT or missing:
        raise NotARunCheckpoint(
            f"{path} is not a training-run checkpoint of minifcn.train (it has no "
            f"{', '.join(missing) or 'run format'}); start a new run from its weights with "
            f"--init-from {path} instead of --resume"
        )
    if meta["spec"].get("model") != meta["args"].get("model"):
        raise NotARunCheckpoint(
            f"{path} is inconsistent: it holds a {meta['spec'].get('model')} but its run "
            f"arguments say {meta['args'].get('model')}"
        )
    check_finite(path, state)
    return state, meta, extra


def load_model(path, expect: str | None = None):
    """Rebuild the model stored in a checkpoint and load its weights.

    ``expect`` ("fcn8s", ...) makes a checkpoint of another model an error. A
    checkpoint with NaN or infinite weights is refused (NonFiniteWeights).
    """
    from .models import model_from_spec

    state, meta, _ = load_checkpoint(path)
    spec = meta.get("spec")
    if not spec or not isinstance(spec, dict) or "model" not in spec:
        raise ValueError(f"{path} is not a minifcn model checkpoint (no model spec inside)")
    if expect is not None and spec["model"] != expect:
        raise ValueError(f"{path} holds a {spec['model']} checkpoint, but {expect} was asked for")
    check_finite(path, state)
    try:
        model = model_from_spec(spec)
        model.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None
    return model, meta
