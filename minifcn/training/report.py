"""What a run prints: the set-up in three lines, one line per epoch, the summary."""

from __future__ import annotations

import sys

from ..data import DataError
from ..inference.engine import collapsed
from .plots import plot_curves
from .saving import save_prediction_grid
from .state import Run


def describe(run: Run) -> None:
    args, model = run.args, run.model
    print(f"run folder: {run.out}")
    n_params = sum(p.data.size for p in model.parameters())
    print(
        f"{type(model).__name__} ({run.cfg_name} backbone, {n_params:,} parameters), "
        f"crop offsets {model.crop_offsets}"
    )
    print(
        f"{args.dataset}: {len(run.train_set)} train / {len(run.val_set)} val images, "
        f"{run.train_set.num_classes} classes; {args.optimizer} lr {run.schedule(0):g}, "
        f"batch {args.batch_size}, {args.epochs} epochs, device {args.device}"
    )
    if getattr(args, "recipe", "default") == "paper":
        print(
            f"recipe paper: summed loss, momentum {args.momentum:g}, weight decay "
            f"{args.weight_decay:g}, upsampling {'fixed' if args.freeze_upsampling else 'learned'}"
        )


def report_epoch(run: Run, row: dict, result: dict, improved: bool) -> None:
    args, s = run.args, run.state
    try:
        plot_curves(s.history, run.out / "curves.png", title=f"{run.model.name} on {args.dataset}")
    except OSError as err:
        print(f"warning: could not draw curves.png: {err}", file=sys.stderr)
    print(
        f"epoch {row['epoch']}/{args.epochs}  loss {row['train_loss']:.4f}  "
        f"pixel acc {row['pixel_accuracy']:.3f}  mean acc {row['mean_accuracy']:.3f}  "
        f"mean IU {row['mean_iu']:.3f}  fw IU {row['fw_iu']:.3f}  "
        f"({row['images_per_s']:.1f} img/s, {row['wall_time']:.0f}s)" + ("  *" if improved else "")
    )
    if collapsed(result["pred_counts"]):
        share = result["pred_counts"] / result["pred_counts"].sum()
        c = int(share.argmax())
        # The per-class table the first time and at the end; one line in between.
        table = not run.warned_collapse or s.epoch == args.epochs
        print(
            f"warning: predictions collapsed onto class {c} "
            f"({run.train_set.class_names[c]}, {share[c]:.1%} of pixels)"
            + (". Per-class IU:\n" + result["metrics"].format_table() if table else ""),
            file=sys.stderr,
        )
        run.warned_collapse = True


def finish(run: Run) -> dict:
    s = run.state
    try:
        save_prediction_grid(
            run.model, run.val_set, run.out / "predictions.png", run.args.grid, run.args.device
        )
    except (OSError, DataError) as err:
        print(f"warning: could not draw predictions.png: {err}", file=sys.stderr)
    summary = {
        "best_mean_iu": s.best_mean_iu,
        "best_epoch": s.best_epoch,
        "wall_time": s.wall_time,
        "run_dir": str(run.out),
        "final": s.history[-1] if s.history else None,
    }
    print(
        f"best validation mean IU {s.best_mean_iu or 0:.4f} (epoch {s.best_epoch}), "
        f"{s.wall_time:.0f}s; run folder {run.out}"
    )
    return summary
