"""PASCAL VOC 2012 segmentation (20 object classes + background), read from disk.

Expected layout (the VOCtrainval_11-May-2012 archive, unpacked)::

    VOCdevkit/VOC2012/
        JPEGImages/<id>.jpg
        SegmentationClass/<id>.png          palette PNG: pixel value = class id, 255 = void
        ImageSets/Segmentation/train.txt    one <id> per line (also val.txt, trainval.txt)

``root`` may be ``VOCdevkit/VOC2012`` itself or the folder holding ``VOCdevkit``.
The "void" pixels (value 255: object outlines and unlabeled areas) are
ignored by the loss and the metrics.
"""

from __future__ import annotations

from pathlib import Path

from .files import SegmentationFiles, read_split_file, require_dir

VOC_CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def find_voc_root(root) -> Path:
    """The ``VOC2012`` folder: ``root`` itself or ``root/VOCdevkit/VOC2012``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"VOC data root not found: {root}")
    for candidate in (root, root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{root} does not look like PASCAL VOC 2012: expected {root}/ImageSets/Segmentation "
        f"or {root}/VOCdevkit/VOC2012/ImageSets/Segmentation"
    )


class VOCSegmentation(SegmentationFiles):
    """PASCAL VOC 2012 segmentation: items are (float32 (3, H, W), int64 (H, W)).

    Args:
        root: ``VOCdevkit/VOC2012`` or the folder containing ``VOCdevkit``.
        split: a name with a list file ``ImageSets/Segmentation/<split>.txt``
            ("train", "val", "trainval").
        crop_size, scale_range, flip: augmentation, see ``transforms.SegmentationTransform``.
        seed: seed of the augmentation randomness.

    Raises FileNotFoundError for a missing root, split file, image or label
    file, and ValueError for an empty split; a label value other than 0..20 or
    255 raises DataError (a ValueError naming the file) when that item is read.
    """

    class_names = VOC_CLASS_NAMES

    def __init__(
        self,
        root,
        split: str = "train",
        crop_size=None,
        scale_range=None,
        flip: bool = False,
        seed: int = 0,
    ):
        self.root = find_voc_root(root)
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"VOC split file not found: {split_file}")
        ids = read_split_file(split_file)
        if not ids:
            raise ValueError(f"VOC split file {split_file} lists no image ids")
        image_dir = require_dir(self.root / "JPEGImages", "VOC image folder")
        label_dir = require_dir(self.root / "SegmentationClass", "VOC label folder")
        pairs = [(image_dir / f"{i}.jpg", label_dir / f"{i}.png") for i in ids]
        _check_files_exist(pairs, split_file)
        self.ids = ids
        super().__init__(pairs, split, crop_size, scale_range, flip, seed)


def _check_files_exist(pairs, listed_in: Path) -> None:
    """FileNotFoundError naming the first missing file (a stat per file, nothing opened)."""
    missing = [p for pair in pairs for p in pair if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"file listed in {listed_in} not found: {missing[0]}{more}")
