"""Evaluate a checkpoint: ``python -m minifcn.evaluate --checkpoint runs/fcn8s_shapes/best.npz``.

Prints the paper's four metrics (pixel accuracy, mean accuracy, mean IU,
frequency-weighted IU), all from one confusion matrix accumulated over the
whole split, and a per-class IU table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from .checkpoint import load_model
from .cli import ensure_device
from .data import build_dataset
from .engine import evaluate


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m minifcn.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--checkpoint", required=True, help="a .npz written by minifcn.train")
    p.add_argument(
        "--dataset",
        default=None,
        choices=["shapes", "voc", "ade20k"],
        help="default: the dataset the checkpoint was trained on",
    )
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--size", type=int, default=None, help="shapes: number of images")
    p.add_argument("--seed", type=int, default=None, help="shapes: seed (default: the run's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--json", default=None, help="also write the scores to this file")
    args = p.parse_args(argv)
    ensure_device(args.device)
    if args.json and Path(args.json).exists():
        raise SystemExit(f"error: {args.json} exists; choose another --json path (nothing written)")
    try:
        model, meta = load_model(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    run_args = meta.get("args", {})
    name = args.dataset or meta.get("dataset", "shapes")
    kw = {}
    if name == "shapes":
        kw["seed"] = args.seed if args.seed is not None else run_args.get("seed", 0)
        if args.size:
            kw["size"] = args.size
    root = args.data_root or run_args.get("data_root")
    try:
        dataset = build_dataset(name, args.split, root, **kw)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if dataset.num_classes != model.num_classes:
        raise SystemExit(
            f"error: {args.checkpoint} predicts {model.num_classes} classes but {name} has "
            f"{dataset.num_classes}"
        )
    batch = args.batch_size or (8 if name == "shapes" else 1)
    model.to(args.device)
    result = evaluate(
        model,
        dataset,
        batch,
        args.device,
        progress=lambda it: tqdm(it, desc=f"evaluating {name} {args.split}", leave=False),
    )
    print(
        f"{model.name} ({model.config.name} backbone) on {name} {args.split} "
        f"({len(dataset)} images), checkpoint {args.checkpoint}"
    )
    print(result["metrics"].format_table())
    scores = {k: result[k] for k in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")}
    scores["per_class_iu"] = [None if v != v else float(v) for v in result["per_class_iu"]]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(scores, f, indent=1)
    return scores


if __name__ == "__main__":
    main()
