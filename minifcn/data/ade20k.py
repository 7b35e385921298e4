"""ADE20K as the MIT Scene Parsing benchmark (SceneParsing / ADEChallengeData2016).

Expected layout (ADEChallengeData2016.zip, unpacked)::

    ADEChallengeData2016/
        images/training/ADE_train_00000001.jpg       (also images/validation/)
        annotations/training/ADE_train_00000001.png  greyscale: 0 = "other", 1..150 = classes

``root`` may be ``ADEChallengeData2016`` itself or the folder holding it.
Label 0 ("other objects", not one of the 150 benchmark classes) becomes the
ignore label 255, and 1..150 become class ids 0..149.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import DataError, SegmentationFiles, require_dir

# The short names of the 150 benchmark classes, in label order (raw value 1 first).
ADE20K_CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

_SPLIT_DIRS = {"train": "training", "val": "validation"}
_NUM_RAW = 151  # raw values 0..150


def find_ade20k_root(root) -> Path:
    """The ``ADEChallengeData2016`` folder: ``root`` itself or ``root/ADEChallengeData2016``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"ADE20K data root not found: {root}")
    for candidate in (root, root / "ADEChallengeData2016"):
        if (candidate / "images").is_dir() and (candidate / "annotations").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{root} does not look like ADEChallengeData2016: expected {root}/images and "
        f"{root}/annotations (or the same under {root}/ADEChallengeData2016)"
    )


class ADE20K(SegmentationFiles):
    """ADE20K scene parsing, 150 classes: items are (float32 (3, H, W), int64 (H, W)).

    Args:
        root: ``ADEChallengeData2016`` or the folder containing it.
        split: "train" (images/training) or "val" (images/validation).
        crop_size, scale_range, flip: augmentation, see ``transforms.SegmentationTransform``.
        seed: seed of the augmentation randomness.

    Raises FileNotFoundError for a missing root, split folder or annotation,
    ValueError for an unknown or empty split; a raw label value above 150
    raises DataError (a ValueError naming the file) when that item is read.
    """

    class_names = ADE20K_CLASS_NAMES

    def __init__(
        self,
        root,
        split: str = "train",
        crop_size=None,
        scale_range=None,
        flip: bool = False,
        seed: int = 0,
    ):
        if split not in _SPLIT_DIRS:
            raise ValueError(f"ADE20K split must be one of {sorted(_SPLIT_DIRS)}, got {split!r}")
        self.root = find_ade20k_root(root)
        sub = _SPLIT_DIRS[split]
        image_dir = require_dir(self.root / "images" / sub, "ADE20K image folder")
        label_dir = require_dir(self.root / "annotations" / sub, "ADE20K annotation folder")
        images = sorted(image_dir.glob("*.jpg"))
        if not images:
            raise ValueError(f"ADE20K image folder {image_dir} holds no .jpg files")
        pairs = [(p, label_dir / f"{p.stem}.png") for p in images]
        missing = [label for _, label in pairs if not label.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise FileNotFoundError(f"ADE20K annotation not found: {missing[0]}{more}")
        # raw value v -> class id v - 1; 0 ("other") -> ignore
        lut = np.arange(-1, 255, dtype=np.int64)
        lut[0] = self.ignore_index
        self._lut = lut.astype(np.uint8)
        super().__init__(pairs, split, crop_size, scale_range, flip, seed)

    def map_label(self, label: np.ndarray, path: Path) -> np.ndarray:
        """Raw annotation uint8 (H, W), values 0..150 -> class ids 0..149 / 255, uint8 (H, W)."""
        bad = label >= _NUM_RAW
        if bad.any():
            value = int(label[bad][0])
            raise DataError(
                f"ADE20K annotation {path} has value {value}: expected 0 (other) or 1..150"
            )
        return self._lut[label]
