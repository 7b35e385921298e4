"""The training loop: batches, forward, loss, backward, step; validate; save.

Read this file first. ``run_epochs`` is the whole of training once ``set_up``
(``setup.py``) has built the ``Run``: for each epoch, ``train_epoch`` takes the
optimiser steps, ``validate`` scores the weights on the validation set, and
``save_epoch`` (``saving.py``) commits last.npz, best.npz and the metrics as one
unit. Resuming (``resume.py``) only restores a ``RunState``; the loop itself does
not know whether it started fresh.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from tqdm import tqdm

from ..data import iterate_batches
from ..data.registry import get_spec
from ..distributed import sharded_evaluate
from ..inference.engine import batch_to_device, predict_scores
from ..models.checkpoint import NonFiniteWeights
from ..storage.npz import nonfinite_arrays
from .report import report_epoch
from .saving import kept_message, save_epoch
from .state import METRIC_KEYS, NonFiniteLoss, Run


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def run_epochs(run: Run) -> None:
    args, s = run.args, run.state
    t_start = time.perf_counter() - s.wall_time
    while run.state.epoch < args.epochs:
        s = run.state
        bar = tqdm(
            total=run.steps_per_epoch,
            initial=s.step_in_epoch,
            desc=f"epoch {s.epoch + 1}/{args.epochs}",
            leave=False,
            # Only on a terminal: in a log file a bar's frames would be a line per step.
            disable=args.no_progress or not run.comm.is_root or not _on_terminal(),
            dynamic_ncols=True,
        )
        # Overflow is expected when a run diverges: the guards below report it in one line.
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                rate = train_epoch(run, bar)
            finally:
                bar.close()
            row, result = validate(run, rate, t_start)
        improved = save_epoch(run, row)  # written by rank 0 alone
        if run.comm.is_root:
            report_epoch(run, row, result, improved)


def train_epoch(run: Run, bar) -> float:
    """The remaining steps of epoch ``state.epoch + 1``; returns training images/s."""
    args, s, model = run.args, run.state, run.model
    if hasattr(run.train_set, "set_epoch"):
        run.train_set.set_epoch(s.epoch)
    model.train()
    order_rng = np.random.default_rng([args.seed, s.epoch])
    # This rank's shard of every global batch (with one process, the whole batch).
    batches = run.sharding.batches(
        run.train_set, args.batch_size, shuffle=True, rng=order_rng, start=s.step_in_epoch
    )
    t_epoch, seen = time.perf_counter(), 0
    for shard in batches:
        run.opt.lr = run.schedule(s.iteration)
        x, y = batch_to_device(
            shard.images,
            shard.labels,
            run.train_set.num_classes,
            run.train_set.ignore_index,
            args.device,
        )
        run.opt.zero_grad()  # one fill of the packed gradients on the GPU
        loss = run.step(x, y)  # forward, loss, backward (no image gradient)
        if not math.isfinite(loss):  # before the weights move
            raise NonFiniteLoss(
                f"loss became {loss} at epoch {s.epoch + 1}, step {s.step_in_epoch + 1} "
                f"(lr {run.opt.lr:g}); try a lower --lr. {kept_message(run)}"
            )
        # Several ranks: gradients and loss become the global batch's (one allreduce).
        loss = run.comm.allreduce_grads(model, loss, shard.weight, run.loss_fn.reduction)
        run.opt.step()
        s.iteration += 1
        run.step_rng = model.rng_state()
        s.step_in_epoch += 1
        s.loss_sum += loss * shard.total
        s.loss_count += shard.total
        seen += shard.total
        rate = seen / max(time.perf_counter() - t_epoch, 1e-9)
        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.1f}")
        bar.update(1)
    return seen / max(time.perf_counter() - t_epoch, 1e-9)


def validate(run: Run, train_rate: float, t_start: float) -> tuple[dict, dict]:
    """Validation metrics of the current weights as a history row (and the full result).

    NonFiniteWeights when the weights, or the scores they give, are not finite.
    """
    args, model = run.args, run.model
    batch = args.batch_size if get_spec(args.dataset).same_size else 1
    if nonfinite_arrays(model):
        raise NonFiniteWeights("the weights became NaN or infinite")
    probe = next(iterate_batches(run.val_set, batch))[0]
    model.eval()
    if not np.isfinite(predict_scores(model, probe, args.device)).all():
        raise NonFiniteWeights("the weights give NaN or infinite scores")
    # Each rank scores its block of batches; the confusion matrices are summed.
    result = sharded_evaluate(run.comm, run.sharding, model, run.val_set, batch, args.device)
    run.comm.check_in_sync(model)  # every rank must hold the same weights
    s = run.state
    row = {
        "epoch": s.epoch + 1,
        "train_loss": s.loss_sum / max(s.loss_count, 1),
        **{k: float(result[k]) for k in METRIC_KEYS},
        "lr": float(run.opt.lr),
        "images_per_s": train_rate,
        "wall_time": time.perf_counter() - t_start,
    }
    return row, result
