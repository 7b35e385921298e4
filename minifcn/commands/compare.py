"""Compare trained runs on the shapes validation set, beside what their output stride allows.

    python -m minifcn.compare runs/fcn32s runs/fcn16s runs/fcn8s_shapes
    python -m minifcn.compare runs/fcn32s runs/fcn16s runs/fcn8s_shapes --figure skips.png

For each run folder (its ``best.npz``) or checkpoint file: how it was trained
(from scratch, staged from another checkpoint with ``--init-from``, or FCN-8s
at once), its mean IU, its boundary IU (mean IU over the pixels within ``--band``
pixels of a label edge: where a coarse prediction fails first), the IU of every
class, how many classes it predicts anywhere, and its training wall time. Beside
each model, the oracle of its output grid (``minifcn.commands.oracle``): the best a score
map of that stride and size can do, upsampled bilinearly. ``--figure`` draws
image | ground truth | each run's prediction, one validation image per row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from minifcn.analysis.oracle import boundary_labels, model_grid, oracle_prediction
from minifcn.commands.args import (
    bounded_int,
    check_fits,
    check_new_file,
    json_safe,
    nonnegative_int,
    positive_int,
    shapes_bytes,
    write_failed,
)
from minifcn.data.shapes import ShapesDataset
from minifcn.inference.engine import evaluate
from minifcn.models.checkpoint import load_checkpoint, load_model
from minifcn.storage.atomic import write_new_atomic, write_text_new

MODEL_NAMES = {"fcn32s": "FCN-32s", "fcn16s": "FCN-16s", "fcn8s": "FCN-8s"}


def _checkpoint_path(path) -> Path:
    path = Path(path)
    return path / "best.npz" if path.is_dir() else path


def describe_training(meta: dict) -> str:
    """ "scratch", "staged from <checkpoint>" or "at once", from the run's saved arguments."""
    args = meta.get("args") or {}
    if args.get("init_from"):
        parent = Path(args["init_from"])
        return f"staged from {parent.parent.name if parent.name == 'best.npz' else parent.name}"
    if args.get("at_once"):
        return "at once"
    return "scratch"


def _over_stages(meta: dict, own, seen=None):
    """``own(meta)`` summed over this run and the runs it was started from
    (``--init-from``); None when any stage's value or checkpoint is missing."""
    seen = seen or set()
    value = own(meta)
    parent = (meta.get("args") or {}).get("init_from")
    if value is None or not parent or parent in seen:
        return value
    try:
        _, pmeta, _ = load_checkpoint(parent)
    except (FileNotFoundError, ValueError):
        return None
    before = _over_stages(pmeta, own, seen | {parent})
    return None if before is None else value + before


def total_epochs(meta: dict) -> int | None:
    """Epochs of this run plus those of the runs it was started from (``--init-from``)."""
    return _over_stages(meta, lambda m: (m.get("args") or {}).get("epochs"))


def wall_time(meta: dict) -> float | None:
    """Training wall time (s) of this run plus the runs it was started from."""

    def own(m):
        history = (m.get("state") or {}).get("history") or []
        return history[-1].get("wall_time") if history else None

    return _over_stages(meta, own)


class _EdgeLabels:
    """``dataset`` with its labels replaced by ``labels`` (the edge band; the rest ignored)."""

    def __init__(self, dataset, labels):
        self.dataset, self.labels = dataset, labels
        self.num_classes, self.ignore_index = dataset.num_classes, dataset.ignore_index
        self.class_names = dataset.class_names

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i][0], self.labels[i].astype(np.int64)


def load_runs(paths, val: ShapesDataset) -> list[tuple]:
    """(path, model, meta) of every run, all loaded before any is scored. ValueError
    naming the run when one cannot be read, or was not trained on shapes with
    ``val``'s classes: its scores would be meaningless numbers, not a comparison."""
    loaded = []
    for path in paths:
        ckpt = _checkpoint_path(path)
        try:
            model, meta = load_model(ckpt)
        except FileNotFoundError as err:
            raise ValueError(f"{path}: {err}") from None
        dataset = meta.get("dataset", "shapes")
        if dataset != "shapes" or model.num_classes != val.num_classes:
            raise ValueError(
                f"{ckpt} holds a {model.name} for {model.num_classes} classes of {dataset}; "
                f"compare scores runs on shapes ({val.num_classes} classes) only"
            )
        loaded.append((path, model, meta))
    return loaded


def compare(paths, val: ShapesDataset, band: int = 3, oracle_steps: int = 100) -> list[dict]:
    """One dict per run: name, model, training, epochs, metrics, oracle figures, predictions."""
    edge_val = _EdgeLabels(val, boundary_labels(val.labels, band, val.ignore_index))
    oracles, rows = {}, []
    for path, model, meta in load_runs(paths, val):
        full = evaluate(model, val, batch_size=20)
        edge = evaluate(model, edge_val, batch_size=20)
        key = (model.name, model.config)
        if key not in oracles:
            stride, centres = model_grid(model, val.image_size)
            full_o, edge_o = _oracle(val, stride, centres, band, oracle_steps)
            oracles[key] = (stride, len(centres), full_o, edge_o)
        stride, cells, o_full, o_edge = oracles[key]
        rows.append(
            {
                "run": str(path),
                "model": model.name,
                "training": describe_training(meta),
                "epochs": total_epochs(meta),
                "wall_time": wall_time(meta),
                "pixel_accuracy": full["pixel_accuracy"],
                "mean_iu": full["mean_iu"],
                "edge_iu": edge["mean_iu"],
                "per_class_iu": [float(v) for v in full["per_class_iu"]],
                "classes_predicted": int(np.count_nonzero(full["pred_counts"])),
                "stride": stride,
                "grid": cells,
                "oracle_mean_iu": o_full,
                "oracle_edge_iu": o_edge,
                "_model": model,
            }
        )
    return rows


def _oracle(val, stride, centres, band, steps) -> tuple[float, float]:
    from minifcn.inference.metrics import SegmentationMetrics

    full = SegmentationMetrics(val.num_classes, val.ignore_index)
    edge = SegmentationMetrics(val.num_classes, val.ignore_index)
    edge_labels = boundary_labels(val.labels, band, val.ignore_index)
    for i in range(0, len(val), 50):
        labels = val.labels[i : i + 50]
        pred = oracle_prediction(
            labels, stride, val.num_classes, val.ignore_index, centres=(centres, centres),
            steps=steps,
        )  # fmt: skip
        full.update(pred, labels)
        edge.update(pred, edge_labels[i : i + 50])
    return full.compute()["mean_iu"], edge.compute()["mean_iu"]


def format_table(rows, class_names, band: int) -> str:
    short = [n[:5] for n in class_names]
    head = (
        f"{'run':<24} {'model':<8} {'training':<30} {'ep':>3} {'mean IU':>8} {'edge IU':>8} "
        + " ".join(f"{n:>6}" for n in short)
        + f" {'cls':>4} {'wall s':>7}   {'grid':>7} {'oracle':>7} {'o.edge':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        per = " ".join(f"{100 * v:6.1f}" for v in r["per_class_iu"])
        wall = "" if r["wall_time"] is None else f"{r['wall_time']:.0f}"
        grid = f"{r['grid']}x{r['grid']}/{r['stride']}"
        lines.append(
            f"{r['run'][-24:]:<24} {MODEL_NAMES.get(r['model'], r['model']):<8} "
            f"{r['training'][:30]:<30} {r['epochs'] or '':>3} {r['mean_iu']:8.3f} "
            f"{r['edge_iu']:8.3f} {per} {r['classes_predicted']:>4} {wall:>7}   {grid:>7} "
            f"{r['oracle_mean_iu']:7.3f} {r['oracle_edge_iu']:7.3f}"
        )
    lines.append(
        f"ep: epochs in all (staged runs include their earlier stages); edge IU: mean IU over "
        f"pixels within {band} px of a label edge; per-class columns: IU in %; cls: classes "
        "predicted somewhere; wall s: training time (earlier stages included); grid: score "
        "cells per side / stride of the map the last upsampling reads; oracle, o.edge: mean "
        "IU and edge IU of the best scores on that grid, upsampled bilinearly "
        "(python -m minifcn.oracle)"
    )
    return "\n".join(lines)


def save_figure(rows, val, path, n: int = 6) -> None:
    """image | ground truth | each run's prediction, for the first ``n`` validation images."""
    from matplotlib.figure import Figure

    from minifcn.data.palette import colorize
    from minifcn.inference.engine import predict_labels

    n = min(n, len(val))
    images = np.stack([val[i][0] for i in range(n)])
    preds = [predict_labels(r["_model"], images) for r in rows]
    cols = 2 + len(rows)
    fig = Figure(figsize=(2 * cols, 2 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    titles = ["image", "ground truth"] + [
        f"{MODEL_NAMES.get(r['model'], r['model'])}\n{r['training'][:24]}" for r in rows
    ]
    for i in range(n):
        panels = [val.raw_image(i), colorize(val.labels[i])] + [colorize(p[i]) for p in preds]
        for j, panel in enumerate(panels):
            axes[i, j].imshow(panel, interpolation="nearest")
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=9)
    write_new_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(
        prog="python -m minifcn.compare",
        description="Compare trained runs on the shapes validation set, with the oracle.",
    )
    p.add_argument("runs", nargs="+", help="run folders (their best.npz) or checkpoint files")
    p.add_argument(
        "--val-size", type=positive_int, default=None, help="validation images (default 200)"
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="the shapes seed the runs used")
    p.add_argument(
        "--band", type=bounded_int(1, 1000), default=3, help="edge band width (pixels) for edge IU"
    )
    p.add_argument("--figure", default=None, help="also write this PNG of predictions")
    p.add_argument("--json", default=None, help="also write the table as JSON")
    args = p.parse_args(argv)
    if args.val_size:
        check_fits(shapes_bytes(args.val_size), f"--val-size {args.val_size}")
    if args.figure:  # both checked before any work, and never overwritten
        check_new_file(args.figure, "--figure", suffixes=(".png",))
    if args.json:
        check_new_file(args.json, "--json")
    val = ShapesDataset("val", size=args.val_size, seed=args.seed)
    try:
        rows = compare(args.runs, val, args.band)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"{val!r}")
    print(format_table(rows, val.class_names, args.band))
    for path, write in (
        (args.figure, lambda: save_figure(rows, val, args.figure)),
        (args.json, lambda: write_text_new(args.json, _json_text(rows))),
    ):
        if path:
            try:
                write()
            except OSError as err:
                raise write_failed(path, err) from None
            print(f"wrote {path}")
    return rows


def _json_text(rows) -> str:
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    return json.dumps(json_safe(clean), indent=1, allow_nan=False)


if __name__ == "__main__":
    main()
