"""Write small example datasets: ``python -m minifcn.example_data DIR``.

Writes DIR/folder (images/, masks/, classes.txt), DIR/folder-split (the same
under train/ and val/) and DIR/labelme (labelme .json files beside their
images), drawn like the shapes dataset at sizes from 64 to 96 pixels. Train on
one with ``python -m minifcn.train --dataset folder --data-root DIR/folder``
(see docs/your-data.md). Nothing is overwritten: a layout's folder must not
exist yet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from minifcn.commands.args import nonnegative_int, positive_int
from minifcn.data.example import LAYOUTS, write_example


def main(argv=None) -> list[Path]:
    p = argparse.ArgumentParser(
        prog="python -m minifcn.example_data", description=__doc__.split("\n")[0]
    )
    p.add_argument("out", help="folder to write the examples into (created if needed)")
    p.add_argument(
        "--layout",
        choices=[*LAYOUTS, "all"],
        default="all",
        help="which layout to write (default: all, each in its own subfolder)",
    )
    p.add_argument("--images", type=positive_int, default=60, help="images per layout")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    args = p.parse_args(argv)
    if args.images < 2:
        raise SystemExit("error: --images must be at least 2 (a train and a val image)")
    out = Path(args.out)
    layouts = LAYOUTS if args.layout == "all" else (args.layout,)
    targets = [out / layout for layout in layouts]
    for target in targets:
        if target.exists() or target.is_symlink():
            raise SystemExit(f"error: {target} exists; choose another folder (nothing written)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SystemExit(f"error: cannot create {out}: {err.strerror or err}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise SystemExit(f"error: {out} is not writable (nothing written)")
    for layout, target in zip(layouts, targets):
        temp = Path(tempfile.mkdtemp(prefix=f".{layout}-", dir=out))
        try:
            write_example(temp, layout, args.images, args.seed)
            temp.rename(target)  # the folder appears whole or not at all
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)  # only the temporary folder made here
            raise
        print(f"wrote {target} ({args.images} images, layout {layout})")
    return targets


if __name__ == "__main__":
    main()
