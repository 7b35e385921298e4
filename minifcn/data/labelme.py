"""labelme annotations: a folder of labelme ``.json`` files beside their images.

labelme (https://github.com/wkentaro/labelme) saves one JSON file per image::

    {"version": "5.5.0", "flags": {},
     "shapes": [{"label": "cat", "points": [[x, y], ...], "group_id": null,
                 "description": "", "shape_type": "polygon", "flags": {}, "mask": null}, ...],
     "imagePath": "cat.jpg", "imageData": null, "imageHeight": 480, "imageWidth": 640}

``imagePath`` is relative to the JSON file's folder; ``imageData`` (optional,
may be null) is the image file itself, base64-encoded. As in labelme, the
embedded image is used when there is one, else the file at ``imagePath``.

Layout::

    DIR/
        <name>.json, <name>.jpg     labelme files beside their images
        classes.txt                 optional: one class name per line, the first is id 0

(or ``DIR/train/`` and ``DIR/val/`` holding the JSON files, or ``DIR/train.txt``
and ``DIR/val.txt`` listing JSON names; otherwise a seeded ``val_fraction`` is
the validation split, as for ``folder.FolderDataset``.) labelme's own
``labels.txt`` works as ``classes.txt`` too: a first line ``__ignore__`` is the
ignore value, and ``_background_`` is the name of class 0.

Without ``classes.txt``, the classes are "background" (id 0) followed by every
label found in the folder's files, sorted by name; a label "_background_" or
"background" is class 0, and "__ignore__" marks pixels to ignore.

Rasterising (with Pillow's ``ImageDraw``): pixels no shape covers are class 0.
Shapes are painted in the order they appear in the file, so where shapes
overlap **the later shape wins**, the rule of labelme's own label-file
conversion (``labelme.utils.shapes_to_label``). A "polygon" (also a shape whose
``shape_type`` is missing or null, as in old files) needs at least 3 points and
is filled with its outline; a "rectangle" is given by two opposite corners; a
"circle" by its centre and a point on it; a "mask" by its bounding box's corners
and a base64 PNG of the mask. Shapes without an area ("point", "line",
"linestrip") are skipped, and ``notes`` counts them.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .files import DataError, DataProblems, SegmentationFiles, read_image
from .folder import (
    DEFAULT_VAL_FRACTION,
    read_class_names,
    read_list,
    resolve_classes,
    seeded_split,
    split_source,
)

AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
SKIPPED_SHAPES = ("point", "line", "linestrip", "points")
IGNORE_LABEL = "__ignore__"
BACKGROUND_LABELS = ("_background_", "background")


def load_labelme(path: Path, problems: list[str]) -> dict | None:
    """The parts of a labelme file that rasterising needs, checked; None if unusable.

    Returns {"shapes": [(label, shape_type, points, mask b64)], "image": path or None,
    "embedded": bool, "height": int or None, "width": int or None, "skipped": int}.
    Every problem (not JSON, no shapes list, a polygon with < 3 points, a missing
    image, ...) is appended to ``problems`` with the file and the shape's number.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"cannot read labelme file {path}: {err}")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        problems.append(f"{path} is not a labelme file: it has no 'shapes' list")
        return None
    start = len(problems)
    shapes, skipped = [], 0
    for k, shape in enumerate(data["shapes"], 1):
        where = f"{path} shape {k}"
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            problems.append(f"{where} has no 'label'")
            continue
        kind = shape.get("shape_type") or "polygon"
        label = shape["label"]
        where += f" ({label!r}, {kind})"
        if kind in SKIPPED_SHAPES:
            skipped += 1
            continue
        if kind not in AREA_SHAPES:
            problems.append(
                f"{where}: unknown shape_type; expected one of {', '.join(AREA_SHAPES)}"
            )
            continue
        points = _points(shape.get("points"))
        if points is None:
            problems.append(f"{where}: 'points' must be a list of [x, y] pairs of numbers")
            continue
        if kind == "polygon" and len(points) < 3:
            problems.append(f"{where} has {len(points)} point(s); a polygon needs at least 3")
            continue
        if kind in ("rectangle", "circle", "mask") and len(points) != 2:
            problems.append(f"{where} has {len(points)} point(s); a {kind} is given by 2")
            continue
        if kind == "mask" and not isinstance(shape.get("mask"), str):
            problems.append(f"{where} has no base64 'mask'")
            continue
        shapes.append((label, kind, points, shape.get("mask")))
    embedded = isinstance(data.get("imageData"), str) and bool(data["imageData"])
    image = None
    if isinstance(data.get("imagePath"), str) and data["imagePath"]:
        image = Path(path).parent / data["imagePath"].replace("\\", "/")
    if not embedded and (image is None or not image.is_file()):
        problems.append(
            f"{path}: its image {image if image is not None else '(no imagePath)'} "
            "does not exist and the file holds no imageData"
        )
    height, width = data.get("imageHeight"), data.get("imageWidth")
    sizes_ok = all(isinstance(v, int) and v > 0 for v in (height, width))
    if len(problems) > start:
        return None
    return {
        "shapes": shapes,
        "image": image,
        "embedded": embedded,
        "height": height if sizes_ok else None,
        "width": width if sizes_ok else None,
        "skipped": skipped,
    }


def _points(raw):
    if not isinstance(raw, list):
        return None
    out = []
    for p in raw:
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in p)
        ):
            return None
        out.append((float(p[0]), float(p[1])))
    return out


def labelme_image(path: Path, info: dict | None = None) -> np.ndarray:
    """The RGB image of labelme file ``path``: the embedded ``imageData`` when there is
    one, else the file at ``imagePath``; uint8 (H, W, 3)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data.get("imageData"), str) and data["imageData"]:
        try:
            raw = base64.b64decode(data["imageData"], validate=False)
            with Image.open(io.BytesIO(raw)) as im:
                return np.asarray(im.convert("RGB"))
        except (binascii.Error, OSError, ValueError) as err:
            raise DataError(f"cannot decode the imageData of {path}: {err}") from None
    info = info if info is not None else load_labelme(path, [])
    if info is None or info["image"] is None:
        raise DataError(f"{path}: no image (no imageData and no imagePath)")
    return read_image(info["image"])


def rasterize(shapes, height: int, width: int, class_ids: dict, ignore_index: int) -> np.ndarray:
    """Class ids uint8 (height, width) of labelme ``shapes`` (label, kind, points, mask).

    Unpainted pixels are 0; shapes are painted in order, so a later shape wins
    where shapes overlap (labelme's ``shapes_to_label`` rule). ``class_ids``:
    label -> id; labels it lacks raise KeyError."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for label, kind, points, mask in shapes:
        value = ignore_index if label == IGNORE_LABEL else class_ids[label]
        if kind == "polygon":
            draw.polygon(points, fill=value, outline=value)
        elif kind == "rectangle":
            (x0, y0), (x1, y1) = points
            box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
            draw.rectangle(box, fill=value, outline=value)
        elif kind == "circle":
            (cx, cy), (px, py) = points
            r = math.hypot(px - cx, py - cy)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=value, outline=value)
        elif kind == "mask":
            with Image.open(io.BytesIO(base64.b64decode(mask))) as im:
                bits = np.asarray(im.convert("L")) > 0
            x0, y0 = (int(min(p[i] for p in points)) for i in (0, 1))
            stamp = Image.fromarray((bits * 255).astype(np.uint8))
            canvas.paste(value, (x0, y0, x0 + stamp.width, y0 + stamp.height), stamp)
            draw = ImageDraw.Draw(canvas)
    return np.asarray(canvas)


def labelme_classes(root: Path, infos, num_classes, ignore_index: int, problems: list[str]):
    """(class names, {label: id}) of a labelme folder; see the module docstring."""
    names = None
    for fname in ("classes.txt", "labels.txt"):
        if (root / fname).is_file():
            names = read_class_names(root / fname, problems)
            if names and names[0] == IGNORE_LABEL:
                names = names[1:]
            break
    if names is None:
        labels = {s[0] for info in infos if info for s in info["shapes"]}
        labels -= {IGNORE_LABEL, *BACKGROUND_LABELS}
        names = ("background", *sorted(labels))
    names = resolve_classes(root, num_classes, ignore_index, problems, names=names)
    ids = {name: i for i, name in enumerate(names)}
    if names:
        for alias in BACKGROUND_LABELS:
            ids.setdefault(alias, 0)
    return names, ids


def _json_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.glob("*.json")
        if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
    )


def labelme_files(root: Path, val_fraction: float, seed: int, problems: list[str]):
    """({"train": [json paths], "val": [...]}, notes) of a labelme folder."""
    source = split_source(root)
    if source == "folders":
        splits = {s: _json_files(root / s) if (root / s).is_dir() else [] for s in ("train", "val")}
        for split in ("train", "val"):
            if not (root / split).is_dir():
                problems.append(
                    f"{root} has a {'val' if split == 'train' else 'train'}/ "
                    f"folder but no {split}/ folder"
                )
        return splits, [f"split: {root}/train and {root}/val"]
    files = {p.stem: p for p in _json_files(root)}
    if source == "lists":
        splits = {}
        for split in ("train", "val"):
            path = root / f"{split}.txt"
            if not path.is_file():
                problems.append(f"{root} has one of train.txt / val.txt but no {split}.txt")
                splits[split] = []
                continue
            names = [Path(n).stem if n.endswith(".json") else n for n in read_list(path, problems)]
            for name in names:
                if name not in files:
                    problems.append(
                        f"{path} lists {name!r}, but {root / (name + '.json')} does not exist"
                    )
            splits[split] = [files[n] for n in names if n in files]
        return splits, [f"split: {root}/train.txt and {root}/val.txt"]
    if len(files) < 2:
        return {"train": list(files.values()), "val": []}, []
    names = seeded_split(list(files), val_fraction, seed)
    splits = {k: [files[n] for n in v] for k, v in names.items()}
    note = (
        f"split: {root} has no train/ and val/ folders and no train.txt / val.txt, so a "
        f"random {val_fraction:.0%} of its {len(files)} labelme files (seed {seed}) is the "
        f"validation split: {len(splits['train'])} train / {len(splits['val'])} val"
    )
    return splits, [note]


class LabelmeDataset(SegmentationFiles):
    """labelme annotations rasterised to class ids: items are (float32 (3, H, W), int64 (H, W)).

    Args: as ``folder.FolderDataset`` (root, split, num_classes, ignore_index,
    val_fraction, crop_size, scale_range, flip, seed, split_seed).

    Every file of both splits is parsed when the dataset is built (the classes
    come from all of them); ``DataProblems`` lists every problem at once.
    ``pairs`` are (image source, JSON file); ``notes`` holds lines to print.
    """

    def __init__(
        self,
        root,
        split: str = "train",
        num_classes: int | None = None,
        ignore_index: int = 255,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        crop_size=None,
        scale_range=None,
        flip: bool = False,
        seed: int = 0,
        split_seed: int = 0,
    ):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"labelme folder not found: {self.root}")
        self.ignore_index = int(ignore_index)
        problems: list[str] = []
        files, self.notes = labelme_files(self.root, val_fraction, split_seed, problems)
        infos = {p: load_labelme(p, problems) for paths in files.values() for p in paths}
        self.class_names, self._ids = labelme_classes(
            self.root, infos.values(), num_classes, self.ignore_index, problems
        )
        if self.class_names:
            for path, info in infos.items():
                for k, (label, *_rest) in enumerate(info["shapes"] if info else (), 1):
                    if label not in self._ids and label != IGNORE_LABEL:
                        problems.append(
                            f"{path} shape {k} has label {label!r}, which is not in the "
                            f"class list ({', '.join(self.class_names)})"
                        )
        for split_name, split_files in files.items():
            if not split_files and not problems:
                problems.append(f"the {split_name} split of {self.root} holds no labelme files")
        if problems:
            raise DataProblems(list(dict.fromkeys(problems)), self.root)
        skipped = sum(infos[p]["skipped"] for p in files[split])
        if skipped:
            self.notes.append(
                f"{split}: {skipped} point/line shape(s) skipped (they have no area to label)"
            )
        self._infos = [infos[p] for p in files[split]]
        pairs = [(info["image"] or path, path) for path, info in zip(files[split], self._infos)]
        super().__init__(pairs, split, crop_size, scale_range, flip, seed)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` before any transform: (uint8 (H, W, 3), class ids uint8 (H, W))."""
        i = self._index(i)
        path, info = self.pairs[i][1], self._infos[i]
        image = labelme_image(path, info)
        h, w = image.shape[:2]
        if info["height"] is not None and (info["height"], info["width"]) != (h, w):
            raise DataError(
                f"{path} says the image is {info['width']}x{info['height']} "
                f"(imageWidth x imageHeight) but its image is {w}x{h}"
            )
        return image, rasterize(info["shapes"], h, w, self._ids, self.ignore_index)

    def raw_image(self, i: int) -> np.ndarray:
        i = self._index(i)
        return labelme_image(self.pairs[i][1], self._infos[i])

    def image_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every image: imageHeight/imageWidth, else the image itself."""
        if getattr(self, "_sizes", None) is None:
            self._sizes = [
                (info["height"], info["width"])
                if info["height"] is not None
                else labelme_image(path, info).shape[:2]
                for (_, path), info in zip(self.pairs, self._infos)
            ]
        return self._sizes

    def check_files(self, progress=None) -> list[str]:
        """One line per unusable file: an image that cannot be decoded, a size that
        disagrees with imageHeight/imageWidth, a mask shape that cannot be decoded."""
        problems = []
        indices = range(len(self))
        for i in indices if progress is None else progress(indices):
            try:
                self.read(i)
            except (DataError, FileNotFoundError) as err:
                problems.append(str(err))
            except (binascii.Error, OSError, ValueError) as err:
                problems.append(f"{self.pairs[i][1]}: a mask shape cannot be decoded: {err}")
        return problems
