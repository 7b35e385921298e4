"""Segment an image: ``python -m minifcn.predict --checkpoint best.npz image.png -o out.png``.

Writes the colour mask to ``out.png`` and the mask drawn over the image to
``out_overlay.png``. Existing files are not overwritten unless ``--force``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

from minifcn.commands.args import ensure_device, memory_gib, positive_int, write_failed
from minifcn.commands.evaluate import tiles_or_exit
from minifcn.data.files import read_image
from minifcn.data.palette import colorize, overlay
from minifcn.data.transforms import normalize
from minifcn.inference.engine import padded_forward_bytes, segment_image, segment_tiled
from minifcn.models.checkpoint import load_model
from minifcn.storage.atomic import write_atomic, write_new_atomic

MASK_SUFFIX = ".png"  # masks are class colours: a lossless format, never JPEG


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(
        prog="python -m minifcn.predict", description=__doc__.split("\n")[0]
    )
    p.add_argument("image", help="an RGB image (PNG, JPEG, ...)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("-o", "--output", default=None, help="mask PNG (default: <image>_mask.png)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument(
        "--max-memory",
        type=memory_gib,
        default=2.0,
        help="GiB the forward pass may use; a larger image is segmented in tiles",
    )
    p.add_argument(
        "--tile",
        type=positive_int,
        default=None,
        help="segment in tiles of this side (default: only when the image needs more than "
        "--max-memory)",
    )
    args = p.parse_args(argv)
    ensure_device(args.device)
    image_path = Path(args.image)
    out = Path(args.output) if args.output else image_path.with_name(image_path.stem + "_mask.png")
    if out.suffix.lower() != MASK_SUFFIX:
        raise SystemExit(
            f"error: -o {out}: masks are written as PNG (lossless class colours); give a name "
            "ending in .png"
        )
    over = out.with_name(out.stem + "_overlay" + out.suffix)
    for path in (out, over):
        if path.is_dir():
            raise SystemExit(f"error: {path} is a folder; give -o a file name")
        if not args.force and os.path.lexists(path):
            raise SystemExit(f"error: {path} exists; pass --force to overwrite it")
    try:
        model, meta = load_model(args.checkpoint)
        image = read_image(image_path)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    model.to(args.device)
    h, w = image.shape[:2]
    budget = int(args.max_memory * 2**30)
    need = padded_forward_bytes(model, h, w)
    tile = tiles_or_exit(model, h, w, budget, args.tile)
    if args.tile is None and tile is not None:
        print(
            f"{w}x{h} image: one pass would need about {need / 2**30:.1f} GiB, more than "
            f"--max-memory {args.max_memory:g}; segmenting in {tile}x{tile} tiles"
        )
    if tile is None:
        pred = segment_image(model, image, args.device)
    else:
        model.eval()
        pred = segment_tiled(model, normalize(image)[None], args.device, tile)[0]
    place = write_atomic if args.force else write_new_atomic  # never over a file without --force
    written = []
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for path, pixels in ((out, colorize(pred)), (over, overlay(image, pred))):
            place(path, lambda f, px=pixels: Image.fromarray(px).save(f, format="PNG"))
            written.append((path, os.lstat(path).st_ino))
    except OSError as err:
        if not args.force:  # the mask without its overlay is half an output: take it back
            for done, inode in written:
                if os.lstat(done).st_ino == inode:  # still the file this command made
                    done.unlink()
        raise write_failed(path, err) from None
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    counts = np.bincount(pred.ravel(), minlength=model.num_classes)
    present = ", ".join(f"{names[c]} {counts[c] / pred.size:.1%}" for c in np.flatnonzero(counts))
    print(f"{image_path} ({image.shape[1]}x{image.shape[0]}): {present}")
    print(f"wrote {out} and {over}")
    return out


if __name__ == "__main__":
    main()
