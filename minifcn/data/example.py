"""Small example datasets in each layout the folder and labelme readers take.

``write_example(out, layout, n, seed)`` writes ``n`` images drawn like the
shapes dataset (objects whose shape, not colour, names the class, on textured
backgrounds), at sizes from ``MIN_SIDE`` to ``MAX_SIDE`` pixels and any aspect
ratio, so the size rules show:

* ``folder``: ``images/*.jpg``, ``masks/*.png`` (palette PNGs: the pixel values
  are the class ids), ``classes.txt``; no split files, so the reader makes a
  seeded validation split.
* ``folder-split``: the same under ``train/`` and ``val/``.
* ``labelme``: one labelme 5.x ``.json`` per image (circles, rectangles and
  polygons, some overlapping) beside its ``.png``; one file embeds its image as
  ``imageData`` instead, and there is no ``classes.txt``, so the classes come
  from the labels.

The same (layout, n, seed) always writes the same files.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from .labelme import rasterize
from .palette import mask_image
from .shapes import CLASS_NAMES, _background, _object_colour, make_shapes

LAYOUTS = ("folder", "folder-split", "labelme")
MIN_SIDE, MAX_SIDE = 64, 96  # the shapes' own 96 pixels, cropped to several aspects
LABELME_VERSION = "5.5.0"


def _sides(rng) -> tuple[int, int]:
    return int(rng.integers(MIN_SIDE, MAX_SIDE + 1)), int(rng.integers(MIN_SIDE, MAX_SIDE + 1))


def folder_example(out: Path, n: int, seed: int, split_folders: bool = False) -> None:
    """``n`` shapes images (objects 36-78 px) cropped to random sizes, as images/ + masks/
    (+ train/ val/)."""
    rng = np.random.default_rng([seed, 1])
    images, labels = make_shapes(n, image_size=MAX_SIDE, seed=seed)
    n_val = max(1, n // 5)
    for i in range(n):
        h, w = _sides(rng)
        top, left = int(rng.integers(0, MAX_SIDE - h + 1)), int(rng.integers(0, MAX_SIDE - w + 1))
        image = images[i, top : top + h, left : left + w]
        label = labels[i, top : top + h, left : left + w]
        base = out if not split_folders else out / ("val" if i < n_val else "train")
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "masks").mkdir(parents=True, exist_ok=True)
        name = f"shapes_{i:03d}"
        Image.fromarray(image).save(base / "images" / f"{name}.jpg", quality=92)
        mask_image(label).save(base / "masks" / f"{name}.png")
    (out / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")


def _labelme_shape(cls: int, rng, h: int, w: int) -> dict:
    """One labelme shape of class ``cls`` placed in an (h, w) image."""
    extent = rng.uniform(0.45, 0.8) * min(h, w)
    margin = 0.4 * extent  # at most a sliver may leave the image
    cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
    name = CLASS_NAMES[cls]
    if name == "disk":
        r = extent / 2
        kind, points = "circle", [[cx, cy], [cx + r, cy]]
    elif name == "rectangle":
        a, b = extent / 2, extent * rng.uniform(0.2, 0.5)
        kind, points = "rectangle", [[cx - a, cy - b], [cx + a, cy + b]]
        if rng.random() < 0.5:
            points = [[cx - b, cy - a], [cx + b, cy + a]]
    elif name == "triangle":
        angles = rng.uniform(0, 2 * math.pi) + np.arange(3) * 2 * math.pi / 3
        r = 0.6 * extent
        kind = "polygon"
        points = [[cx + r * math.cos(t), cy + r * math.sin(t)] for t in angles]
    else:  # a plus sign, as a 12-corner polygon
        half, t = extent / 2, extent * rng.uniform(0.16, 0.22)
        turn = rng.uniform(0, math.pi / 2)
        corners = [(t, half), (t, t), (half, t), (half, -t), (t, -t), (t, -half),
                   (-t, -half), (-t, -t), (-half, -t), (-half, t), (-t, t), (-t, half)]  # fmt: skip
        c, s = math.cos(turn), math.sin(turn)
        kind = "polygon"
        points = [[cx + c * u - s * v, cy + s * u + c * v] for u, v in corners]
    points = [[round(float(x), 2), round(float(y), 2)] for x, y in points]
    return {
        "label": name,
        "points": points,
        "group_id": None,
        "description": "",
        "shape_type": kind,
        "flags": {},
        "mask": None,
    }


def labelme_example(out: Path, n: int, seed: int) -> None:
    """``n`` images with labelme 5.x annotation files beside them (one embeds its image)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2])
    ids = {name: i for i, name in enumerate(CLASS_NAMES)}
    for i in range(n):
        h, w = _sides(rng)
        yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        image = _background(rng, xx, yy, max(h, w))
        shapes = []
        for _ in range(int(rng.integers(1, 3))):
            shape = _labelme_shape(int(rng.integers(1, len(CLASS_NAMES))), rng, h, w)
            shapes.append(shape)
            one = [(shape["label"], shape["shape_type"], shape["points"], None)]
            mask = rasterize(one, h, w, ids, 255) > 0
            if not mask.any():
                continue
            colour = _object_colour(rng, image[mask].mean(axis=0))
            image = np.where(mask[..., None], colour, image)
        image += rng.normal(0.0, 6.0, image.shape)
        pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        name = f"scene_{i:03d}"
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        embedded = i == 0  # labelme's imageData: the image file, base64, inside the JSON
        if not embedded:
            (out / f"{name}.png").write_bytes(buffer.getvalue())
        doc = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": shapes,
            "imagePath": f"{name}.png",
            "imageData": base64.b64encode(buffer.getvalue()).decode() if embedded else None,
            "imageHeight": h,
            "imageWidth": w,
        }
        (out / f"{name}.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")


def write_example(out, layout: str, n: int = 60, seed: int = 0) -> Path:
    """Write the example of ``layout`` (one of ``LAYOUTS``) into the folder ``out``."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if n < 2:
        raise ValueError(f"an example needs at least 2 images (a train and a val one), got {n}")
    out = Path(out)
    if layout == "labelme":
        labelme_example(out, n, seed)
    else:
        out.mkdir(parents=True, exist_ok=True)
        folder_example(out, n, seed, split_folders=layout == "folder-split")
    return out
