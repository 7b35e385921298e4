"""Evaluate a checkpoint: ``python -m minifcn.evaluate --checkpoint runs/fcn8s_shapes/best.npz``.

Prints the paper's four metrics (pixel accuracy, mean accuracy, mean IU,
frequency-weighted IU), all from one confusion matrix accumulated over the
whole split, and a per-class IU table.
"""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from minifcn.commands.args import (
    check_fits,
    check_new_file,
    ensure_device,
    json_safe,
    memory_gib,
    nonnegative_int,
    positive_int,
    shapes_bytes,
    show_progress,
    write_failed,
)
from minifcn.data import DataError, build_dataset
from minifcn.inference.engine import evaluate, plan_tiles, predict_labels, segment_tiled
from minifcn.models.checkpoint import load_model
from minifcn.storage.atomic import write_text_new


def tiles_or_exit(model, h: int, w: int, budget: int, tile=None, batch: int = 1):
    """``plan_tiles``, with its refusal as the one-line SystemExit."""
    try:
        return plan_tiles(model, h, w, budget, tile, batch)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


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
    p.add_argument("--size", type=positive_int, default=None, help="shapes: number of images")
    p.add_argument(
        "--seed", type=nonnegative_int, default=None, help="shapes: seed (default: the run's)"
    )
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument(
        "--max-memory",
        type=memory_gib,
        default=2.0,
        help="GiB one forward pass may use; larger images are segmented in tiles",
    )
    p.add_argument(
        "--tile",
        type=positive_int,
        default=None,
        help="segment every image in tiles of this side (default: only images that need "
        "more than --max-memory)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--json", default=None, help="also write the scores to this file")
    args = p.parse_args(argv)
    ensure_device(args.device)
    if args.json:
        check_new_file(args.json, "--json")
    if args.size:
        check_fits(shapes_bytes(args.size), f"--size {args.size}")
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
    budget = int(args.max_memory * 2**30)

    def predict(model, images, device):
        n, _, h, w = images.shape
        tile = tiles_or_exit(model, h, w, budget, args.tile, n)
        if tile is None:
            return predict_labels(model, images, device)
        return segment_tiled(model, images, device, tile)

    try:
        result = evaluate(
            model,
            dataset,
            batch,
            args.device,
            progress=lambda it: tqdm(
                it, desc=f"evaluating {name} {args.split}", leave=False, disable=not show_progress()
            ),
            predict=predict,
        )
    except (DataError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
    print(
        f"{model.name} ({model.config.name} backbone) on {name} {args.split} "
        f"({len(dataset)} images), checkpoint {args.checkpoint}"
    )
    print(result["metrics"].format_table())
    scores = {k: result[k] for k in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")}
    scores["per_class_iu"] = [float(v) for v in result["per_class_iu"]]
    if args.json:  # NaN (no labelled pixel of a class) is written as null: JSON has no NaN
        try:
            write_text_new(args.json, json.dumps(json_safe(scores), indent=1, allow_nan=False))
        except OSError as err:
            raise write_failed(args.json, err) from None
        print(f"wrote {args.json}")
    return scores


if __name__ == "__main__":
    main()
