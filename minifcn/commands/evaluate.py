"""Evaluate a checkpoint: ``python -m minifcn.evaluate --checkpoint runs/fcn8s_shapes/best.npz``.

Prints the paper's four metrics (pixel accuracy, mean accuracy, mean IU,
frequency-weighted IU), all from one confusion matrix accumulated over the
whole split, and the IU of each class under its own name (the names of the
dataset: classes.txt or the labelme labels for your own data). By default the
split is the one the checkpoint's run validated on, rebuilt from the run's
own settings.
"""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from minifcn.api import Segmenter
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
from minifcn.data.registry import DATASETS, dataset_kwargs, datasets_help, get_spec
from minifcn.models.checkpoint import load_model
from minifcn.storage.atomic import write_text_new

METRICS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minifcn.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--checkpoint", required=True, help="a .npz written by minifcn.train")
    p.add_argument(
        "--dataset",
        default=None,
        choices=list(DATASETS),
        help=f"default: the dataset the checkpoint was trained on ({datasets_help()})",
    )
    p.add_argument("--data-root", default=None, help="default: the run's own")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--size", type=positive_int, default=None, help="shapes: number of images")
    p.add_argument(
        "--seed", type=nonnegative_int, default=None, help="shapes: seed (default: the run's)"
    )
    p.add_argument(
        "--ignore-index",
        type=nonnegative_int,
        default=None,
        help="folder/labelme: the mask value to ignore (default: the run's, else 255)",
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
    return p


def dataset_for(args, meta: dict, num_classes: int):
    """The split to evaluate on: the run's dataset and settings unless flags say otherwise."""
    run_args = meta.get("args", {})
    name = args.dataset or meta.get("dataset", "shapes")
    same_data = name == meta.get("dataset", "shapes")
    settings = dict(run_args) if same_data else {}
    settings[f"{args.split}_size"] = args.size
    if args.seed is not None:
        settings["seed"] = args.seed
    if args.ignore_index is not None:
        settings["ignore_index"] = args.ignore_index
    if get_spec(name).own_classes and settings.get("num_classes") is None:
        settings["num_classes"] = num_classes  # used only where the folder has no classes.txt
    root = args.data_root or (run_args.get("data_root") if same_data else None)
    kw = dataset_kwargs(name, args.split, settings)
    return name, build_dataset(name, args.split, root, **kw)


def model_and_data(args):
    """(model, meta, dataset name, dataset) for the flags, or SystemExit with one line."""
    try:
        model, meta = load_model(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    try:
        name, dataset = dataset_for(args, meta, model.num_classes)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if dataset.num_classes != model.num_classes:
        raise SystemExit(
            f"error: {args.checkpoint} predicts {model.num_classes} classes but {name} has "
            f"{dataset.num_classes}"
        )
    for note in getattr(dataset, "notes", ()):
        print(note)
    return model, meta, name, dataset


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    ensure_device(args.device)
    if args.json:
        check_new_file(args.json, "--json")
    if args.size:
        check_fits(shapes_bytes(args.size), f"--size {args.size}")
    model, meta, name, dataset = model_and_data(args)
    batch = args.batch_size or get_spec(name).eval_batch
    segmenter = Segmenter(model, meta, args.device, args.max_memory)
    bar = show_progress()
    try:
        scores = segmenter.evaluate(
            dataset,
            batch,
            progress=lambda it: tqdm(
                it, desc=f"evaluating {name} {args.split}", leave=False, disable=not bar
            ),
            tile=args.tile,
        )
    except (DataError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
    except ValueError as err:  # the tiles do not fit --max-memory
        raise SystemExit(f"error: {err}") from None
    print(
        f"{model.name} ({model.config.name} backbone) on {name} {args.split} "
        f"({len(dataset)} images), checkpoint {args.checkpoint}"
    )
    print(scores["table"])
    result = {k: scores[k] for k in METRICS}
    result["per_class_iu"] = list(scores["per_class_iu"].values())
    result["class_names"] = list(scores["per_class_iu"])
    if args.json:  # NaN (no labelled pixel of a class) is written as null: JSON has no NaN
        try:
            write_text_new(args.json, json.dumps(json_safe(result), indent=1, allow_nan=False))
        except OSError as err:
            raise write_failed(args.json, err) from None
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
