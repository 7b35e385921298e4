"""How well can a network whose scores live on a stride-s grid segment at best?

    python -m minifcn.oracle                 # the grids of the mini FCN-32s, 16s, 8s
    python -m minifcn.oracle --strides 4     # ... and a plain stride-4 grid

The oracle knows the ground truth. It takes the score map a network upsamples
last (FCN-32s: score_fr, stride 32; FCN-16s: fuse_pool4, 16; FCN-8s: fuse_pool3,
8), with the cells and positions the network's geometry gives it for the image
size, and finds the best class scores for those cells: the ones whose bilinear
upsampling (FCN's last ``ConvTranspose2d`` as initialised) fits the labels best.
Its arg-max is the oracle's prediction. What it misses is what a score map of
that stride cannot draw: corners, thin parts, notches, small objects. It is not
a strict bound (a network learns its upsampling filter), but it shows what each
stride leaves on the table, whatever the training.

The module also holds the boundary measure the results table uses: mean IU
counted only on pixels within a few pixels of a label edge, where coarse
predictions fail first.
"""

from __future__ import annotations

import argparse

from minifcn.analysis.oracle import format_oracle_table, model_grid, oracle_table
from minifcn.commands.args import bounded_int, check_fits, nonnegative_int, positive_int

MODELS = ("fcn32s", "fcn16s", "fcn8s")
CHUNK = 50  # images the oracle fits at once (analysis.oracle.oracle_table)


def main(argv=None) -> None:
    from minifcn.data.shapes import ShapesDataset
    from minifcn.models import build_model

    p = argparse.ArgumentParser(
        prog="python -m minifcn.oracle",
        description="Mean IU of the best scores on a network's output grid, upsampled bilinearly.",
    )
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    p.add_argument("--config", default="mini", choices=["mini", "paper"])
    p.add_argument(
        "--strides", type=bounded_int(1, 4096), nargs="*", default=[], help="also plain grids"
    )
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--size", type=positive_int, default=None, help="images (default: the split's)")
    p.add_argument(
        "--image-size", type=bounded_int(16, 4096), default=None, help="shapes image side"
    )
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument(
        "--band", type=bounded_int(1, 1000), default=3, help="edge band width for the edge IU"
    )
    p.add_argument(
        "--steps", type=bounded_int(0, 100_000), default=100, help="Adam steps fitting the scores"
    )
    args = p.parse_args(argv)
    side = args.image_size or 96
    n = args.size or 200
    # The shapes split, and the oracle's float32 arrays at full resolution for one chunk
    # of images (targets, scores, probabilities, gradient: about eight per class).
    check_fits(n * side * side * 4 + min(n, CHUNK) * 5 * side * side * 4 * 8, "this oracle")
    ds = ShapesDataset(args.split, size=args.size, image_size=args.image_size, seed=args.seed)
    grids = []
    for name in args.models:
        model = build_model(name, ds.num_classes, args.config)
        try:
            stride, centres = model_grid(model, ds.image_size)
        except ValueError as err:
            raise SystemExit(f"error: --image-size {ds.image_size}: {err}") from None
        grids.append((name, stride, centres))
    grids += [(f"stride {s}", s, None) for s in args.strides]
    rows = oracle_table(ds.labels, grids, ds.num_classes, ds.ignore_index, args.band, args.steps)
    print(f"oracle on {ds!r}, {args.config} backbone")
    print(format_oracle_table(rows, ds.class_names, args.band))


if __name__ == "__main__":
    main()
