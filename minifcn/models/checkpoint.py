"""Model checkpoints: one ``.npz`` file per model, saved atomically and durably.

A checkpoint is one ``.npz`` file: every parameter under its ``state_dict``
name, plus a JSON string under ``__meta__`` (model spec, epoch, ...) and any
extra arrays (optimiser state) under ``__extra__/<name>``. Files are written by
``minifcn.storage`` (temporary file, fsync, rename).

Weights are never saved when any of them is NaN or infinite
(``NonFiniteWeights``), and ``load_model`` refuses such a file, so a diverged
run cannot leave poisoned weights behind that evaluate or predict would use.
"""

from __future__ import annotations

from pathlib import Path

from ..storage.atomic import write_atomic
from ..storage.npz import EXTRA_PREFIX, _npz_writer, load_npz, nonfinite_arrays
from .fcn import model_from_spec

RUN_FORMAT = "minifcn-run"  # meta["format"] of a checkpoint written by minifcn.train


class NonFiniteWeights(ValueError):
    """Some parameters hold NaN or infinite values."""


class NotARunCheckpoint(ValueError):
    """A checkpoint without the training state that ``--resume`` needs."""


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
