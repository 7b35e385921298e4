"""What a run writes: checkpoints that carry everything ``--resume`` needs, the metrics
files, the prediction grid; each save one all-or-nothing commit of the run folder."""

from __future__ import annotations

import dataclasses
import json
import math

from ..data.transforms import denormalize
from ..inference.engine import predict_labels
from ..models.checkpoint import RUN_FORMAT, checkpoint_writer
from ..storage.atomic import describe_os_error
from ..storage.npz import nonfinite_arrays
from .plots import plot_predictions
from .runfolder import interrupts_deferred, is_better
from .state import Run, RunError, RunState


def checkpoint_meta(run: Run, state: RunState, rng_state=None) -> tuple[dict, dict]:
    """(meta, extra arrays) of a run checkpoint: everything --resume needs."""
    opt_meta, extra = run.opt.checkpoint_state()
    meta = {
        "format": RUN_FORMAT,
        **opt_meta,
        "dropout_rng": rng_state if rng_state is not None else run.model.rng_state(),
        "args": {k: v for k, v in vars(run.args).items() if not k.startswith("_")},
        "config_name": run.cfg_name,
        "state": state.to_dict(),
        "dataset": run.args.dataset,
        "class_names": list(run.train_set.class_names),
    }
    return meta, extra


def history_writers(history: list[dict]) -> dict:
    """Writers of metrics.json and metrics.csv for ``RunFolder.commit``."""
    # A NaN mean IU (no validation pixel had a label) is written as null: JSON has no NaN.
    files = {"metrics.json": _text(json.dumps(_json_safe(history), indent=1, allow_nan=False))}
    if history:
        keys = list(history[0].keys())
        lines = [",".join(keys)] + [",".join(_fmt(h.get(k)) for k in keys) for h in history]
        files["metrics.csv"] = _text("\n".join(lines) + "\n")
    return files


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _text(text: str):
    return lambda f: f.write(text.encode())


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def kept_message(run: Run) -> str:
    if run.on_disk is None:
        return "Nothing was saved (no checkpoint was written before this)."
    return (
        f"The last good checkpoint {run.out / 'last.npz'} ({run.on_disk}, finite weights) was kept."
    )


def save_epoch(run: Run, row: dict) -> bool:
    """Commit the finished epoch: last.npz, best.npz when it is the best, the metrics.

    One unit: Ctrl-C waits until it is done; an error leaves the previous files.
    Returns whether the epoch is the new best.
    """
    s = run.state
    new = dataclasses.replace(s, history=[*s.history, row])
    new.epoch, new.step_in_epoch, new.loss_sum, new.loss_count = s.epoch + 1, 0, 0.0, 0
    new.wall_time = row["wall_time"]
    improved = is_better(row["mean_iu"], s.best_mean_iu)
    if improved:
        new.best_mean_iu, new.best_epoch = row["mean_iu"], new.epoch
    meta, extra = checkpoint_meta(run, new)
    ckpt = checkpoint_writer(run.model, meta, extra)
    files = {"last.npz": ckpt}
    if improved:
        files["best.npz"] = ckpt
    files.update(history_writers(new.history))
    with interrupts_deferred():
        try:
            run.folder.commit(files)
        except OSError as err:
            raise RunError(
                f"cannot save epoch {new.epoch} in {run.out}: {err.strerror or err}. "
                f"{kept_message(run)}"
            ) from None
        run.state, run.on_disk = new, new.where()
    return improved


def save_interrupted(run: Run) -> str:
    """Save last.npz mid-epoch (Ctrl-C, bad data); returns what to tell the user."""
    if nonfinite_arrays(run.model):
        return f"the weights had become non-finite, so nothing was saved. {kept_message(run)}"
    # The unfinished step is dropped: weights are those after the last finished step,
    # and the dropout generators are rewound to where that step began.
    meta, extra = checkpoint_meta(run, run.state, rng_state=run.step_rng)
    with interrupts_deferred(reraise=False):
        try:
            run.folder.commit({"last.npz": checkpoint_writer(run.model, meta, extra)})
        except OSError as err:  # a full disk: the previous files stay as they were
            return (
                f"could not save {run.out / 'last.npz'} ({describe_os_error(err)}). "
                f"{kept_message(run)}"
            )
        run.on_disk = run.state.where()
    return (
        f"saved {run.out / 'last.npz'} at {run.on_disk}; continue with "
        f"python -m minifcn.train --out {run.out} --resume"
    )


def save_prediction_grid(model, dataset, path, n: int, device: str = "cpu") -> None:
    n = min(n, len(dataset))
    if n == 0:
        return
    items = [dataset[i] for i in range(n)]
    model.eval()
    images = [denormalize(x) for x, _ in items]
    labels = [y for _, y in items]
    preds = [predict_labels(model, x[None], device)[0] for x, _ in items]
    plot_predictions(images, labels, preds, path, ignore_index=dataset.ignore_index)
