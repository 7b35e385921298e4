"""Segment an image: ``python -m minifcn.predict --checkpoint best.npz image.png -o out.png``.

Writes the colour mask to ``out.png`` and the mask drawn over the image to
``out_overlay.png``. Existing files are not overwritten unless ``--force``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from minifcn.commands.args import ensure_device, positive_float, positive_int
from minifcn.commands.evaluate import tile_or_exit
from minifcn.data.files import read_image
from minifcn.data.palette import colorize, overlay
from minifcn.data.transforms import normalize
from minifcn.inference.engine import _next_supported, forward_bytes, segment_image, segment_tiled
from minifcn.models.checkpoint import load_model
from minifcn.storage.atomic import write_atomic


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
        type=positive_float,
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
    over = out.with_name(out.stem + "_overlay" + (out.suffix or ".png"))
    if not args.force:
        for path in (out, over):
            if path.exists():
                raise SystemExit(f"error: {path} exists; pass --force to overwrite it")
    try:
        model, meta = load_model(args.checkpoint)
        image = read_image(image_path)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    model.to(args.device)
    h, w = image.shape[:2]
    budget = int(args.max_memory * 2**30)
    need = forward_bytes(model, _next_supported(model, h), _next_supported(model, w))
    tile = args.tile
    if tile is None and need > budget:
        tile = tile_or_exit(model, budget, args.max_memory)
        print(
            f"{w}x{h} image: one pass would need about {need / 2**30:.1f} GiB, more than "
            f"--max-memory {args.max_memory:g}; segmenting in {tile}x{tile} tiles"
        )
    if tile is None:
        pred = segment_image(model, image, args.device)
    else:
        model.eval()
        pred = segment_tiled(model, normalize(image)[None], args.device, tile)[0]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for path, pixels in ((out, colorize(pred)), (over, overlay(image, pred))):
            write_atomic(path, lambda f, px=pixels: Image.fromarray(px).save(f, format="PNG"))
    except OSError as err:
        raise SystemExit(f"error: cannot write {out}: {err.strerror or err}") from None
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    counts = np.bincount(pred.ravel(), minlength=model.num_classes)
    present = ", ".join(f"{names[c]} {counts[c] / pred.size:.1%}" for c in np.flatnonzero(counts))
    print(f"{image_path} ({image.shape[1]}x{image.shape[0]}): {present}")
    print(f"wrote {out} and {over}")
    return out


if __name__ == "__main__":
    main()
