"""Why is FCN's padding 100 and its crop offset 19? Print the geometry, layer by layer.

    python -m minifcn.explain --model fcn8s [--config paper|mini] [--size 500]

For every layer: its kernel, stride and padding; the blob's stride in image
pixels ("jump"), its receptive field, the coordinate map from blob pixels to
image pixels, and (with --size) the blob's side length. Then the crop offsets
that follow from the maps.
"""

from __future__ import annotations

import argparse

from minifcn.analysis.geometry import explain
from minifcn.commands.args import bounded_int
from minifcn.models import build_model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m minifcn.explain", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", default="fcn8s", choices=["fcn32s", "fcn16s", "fcn8s"])
    parser.add_argument("--config", default="paper", choices=["paper", "mini"])
    parser.add_argument(
        "--size",
        type=bounded_int(1, 1_000_000),
        default=None,
        help="also show blob sizes for this side",
    )
    args = parser.parse_args(argv)
    try:
        text = explain(build_model(args.model, 21, args.config), args.size)
    except ValueError as err:  # a side the network cannot take: the model says why
        raise SystemExit(f"error: --size {args.size}: {err}") from None
    print(text)


if __name__ == "__main__":
    main()
