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


def main(argv=None) -> None:
    from minifcn.data.shapes import ShapesDataset
    from minifcn.models import build_model

    p = argparse.ArgumentParser(
        prog="python -m minifcn.oracle",
        description="Mean IU of the best scores on a network's output grid, upsampled bilinearly.",
    )
    p.add_argument("--models", nargs="*", default=["fcn32s", "fcn16s", "fcn8s"])
    p.add_argument("--config", default="mini", choices=["mini", "paper"])
    p.add_argument("--strides", type=int, nargs="*", default=[], help="also plain grids")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--size", type=int, default=None, help="images (default: the split's)")
    p.add_argument("--image-size", type=int, default=None, help="shapes image side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--band", type=int, default=3, help="edge band width for the edge IU")
    p.add_argument("--steps", type=int, default=100, help="Adam steps fitting the scores")
    args = p.parse_args(argv)
    ds = ShapesDataset(args.split, size=args.size, image_size=args.image_size, seed=args.seed)
    grids = []
    for name in args.models:
        stride, centres = model_grid(build_model(name, ds.num_classes, args.config), ds.image_size)
        grids.append((name, stride, centres))
    grids += [(f"stride {s}", s, None) for s in args.strides]
    rows = oracle_table(ds.labels, grids, ds.num_classes, ds.ignore_index, args.band, args.steps)
    print(f"oracle on {ds!r}, {args.config} backbone")
    print(format_oracle_table(rows, ds.class_names, args.band))


if __name__ == "__main__":
    main()
