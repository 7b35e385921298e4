"""Model checkpoints: one ``.npz`` file per model, saved atomically and durably.

A checkpoint is one ``.npz`` file: every parameter under its ``state_dict``
name, plus a JSON string under ``__meta__`` (model spec, epoch, ...) and any
extra arrays (optimiser state) under ``__extra__/<name>``. Files are written by
``minifcn.storage`` (temporary file, fsync, rename).

Loading allocates only what the file holds: ``minifcn.storage.npz`` checks every
array's declared shape against its bytes and a memory budget before reading, and
``check_spec`` checks the model spec's sizes (classes, widths, convolutions per
block, fc6) against the arrays before the model is built, so a small file whose
spec declares 1,500 classes is refused instead of building a 1,500-class model.

Weights are never saved when any of them is NaN or infinite
(``NonFiniteWeights``), and ``load_model`` refuses such a file, so a diverged
run cannot leave poisoned weights behind that evaluate or predict would use.
"""

from __future__ import annotations

from pathlib import Path

from ..storage.atomic import write_atomic
from ..storage.npz import EXTRA_PREFIX, _npz_writer, load_npz, nonfinite_arrays
from .config import get_config
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


def check_spec(path, spec: dict, state: dict) -> None:
    """ValueError naming ``path`` unless every size ``spec`` declares is one the arrays
    in ``state`` hold: the class count (``score_fr``), every backbone convolution the
    configuration implies with its width, and fc6/fc7. Called before the model is
    built, so the model allocates no more than the file holds."""
    try:
        num_classes = spec["num_classes"]
        cfg = get_config(spec["config"])
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes {num_classes!r} is not a positive integer")
        counts = [int(n) for n in cfg.convs_per_block]
        widths = [int(w) for w in cfg.widths]
        if len(counts) != len(widths) or not 0 < sum(counts) <= 64 or min(counts) < 1:
            raise ValueError(f"convs_per_block {cfg.convs_per_block!r} is not a VGG backbone")
        if not 0 <= int(cfg.first_padding) <= 1000:
            raise ValueError(f"first_padding {cfg.first_padding!r} is outside 0..1000")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: its model spec is not usable ({err})") from None
    expect = {}
    previous = 3
    for b, (n, w) in enumerate(zip(counts, widths), 1):
        for i in range(1, n + 1):
            expect[f"conv{b}_{i}.weight"] = (w, previous, 3, 3)
            previous = w
    k, fc = int(cfg.fc6_kernel), int(cfg.fc_channels)
    expect["fc6.weight"] = (fc, previous, k, k)
    expect["fc7.weight"] = (fc, fc, 1, 1)
    expect["score_fr.weight"] = (num_classes, fc, 1, 1)
    for name, shape in expect.items():
        held = state.get(name)
        if held is None or tuple(held.shape) != shape:
            what = "no such array" if held is None else f"shape {tuple(held.shape)}"
            raise ValueError(
                f"{path}: its model spec ({spec.get('model')}, {num_classes} classes, "
                f"{cfg.name!r} backbone) needs {name} of shape {shape}, the file holds {what}"
            )


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
    check_spec(path, spec, state)
    try:
        model = model_from_spec(spec)
        model.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None
    return model, meta
