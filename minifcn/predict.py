"""Segment an image: ``python -m minifcn.predict --checkpoint best.npz image.png -o out.png``.

Writes the colour mask to ``out.png`` and the mask drawn over the image to
``out_overlay.png``. Existing files are not overwritten unless ``--force``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from .checkpoint import load_model
from .cli import ensure_device
from .data.files import read_image
from .data.palette import colorize, overlay
from .engine import segment_image


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(
        prog="python -m minifcn.predict", description=__doc__.split("\n")[0]
    )
    p.add_argument("image", help="an RGB image (PNG, JPEG, ...)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("-o", "--output", default=None, help="mask PNG (default: <image>_mask.png)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
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
    pred = segment_image(model, image, args.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(colorize(pred)).save(out)
    Image.fromarray(overlay(image, pred)).save(over)
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    counts = np.bincount(pred.ravel(), minlength=model.num_classes)
    present = ", ".join(f"{names[c]} {counts[c] / pred.size:.1%}" for c in np.flatnonzero(counts))
    print(f"{image_path} ({image.shape[1]}x{image.shape[0]}): {present}")
    print(f"wrote {out} and {over}")
    return out


if __name__ == "__main__":
    main()
