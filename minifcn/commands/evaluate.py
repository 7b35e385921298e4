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
    check_new_file,
    ensure_device,
    nonnegative_int,
    positive_float,
    positive_int,
)
from minifcn.data import DataError, build_dataset
from minifcn.inference.engine import (
    _next_supported,
    evaluate,
    forward_bytes,
    network_stride,
    predict_labels,
    receptive_margin,
    segment_tiled,
    tile_size_for,
)
from minifcn.models.checkpoint import load_model
from minifcn.storage.atomic import write_text_atomic


def tile_or_exit(model, budget: int, gib: float) -> int:
    """The tile side that fits ``budget`` bytes, or SystemExit saying what to raise."""
    tile = tile_size_for(model, budget)
    if tile == 0:
        side = _next_supported(model, network_stride(model) + 2 * receptive_margin(model))
        need = forward_bytes(model, side, side) / 2**30
        raise SystemExit(
            f"error: not even a small tile of this {model.name} fits in --max-memory {gib:g} "
            f"GiB; a tile needs about {need:.1f} GiB: raise --max-memory"
        )
    return tile


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
        type=positive_float,
        default=2.0,
        help="GiB one forward pass may use; larger images are segmented in tiles",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--json", default=None, help="also write the scores to this file")
    args = p.parse_args(argv)
    ensure_device(args.device)
    if args.json:
        check_new_file(args.json, "--json")
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
        if forward_bytes(model, _next_supported(model, h), _next_supported(model, w), n) <= budget:
            return predict_labels(model, images, device)
        return segment_tiled(model, images, device, tile_or_exit(model, budget, args.max_memory))

    try:
        result = evaluate(
            model,
            dataset,
            batch,
            args.device,
            progress=lambda it: tqdm(it, desc=f"evaluating {name} {args.split}", leave=False),
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
    scores["per_class_iu"] = [None if v != v else float(v) for v in result["per_class_iu"]]
    if args.json:
        write_text_atomic(args.json, json.dumps(scores, indent=1))
    return scores


if __name__ == "__main__":
    main()
