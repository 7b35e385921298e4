"""Datasets by kind, for your own code (``minifcn.datasets``): each returns one split.

    import minifcn

    train = minifcn.datasets.folder("my_data", split="train")    # images/ + masks/
    val = minifcn.datasets.labelme("my_labelme", split="val")    # labelme .json files
    image, label = train[0]    # float32 (3, H, W) mean-subtracted, int64 (H, W) class ids
    train.class_names, train.num_classes, train.notes

See ``folder.FolderDataset`` and ``labelme.LabelmeDataset`` for the layouts and
the options (num_classes, ignore_index, val_fraction, crop_size, flip, seed).
"""

from __future__ import annotations

from .ade20k import ADE20K
from .folder import FolderDataset
from .labelme import LabelmeDataset
from .registry import DATASETS, build_dataset
from .shapes import ShapesDataset
from .voc import VOCSegmentation


def folder(root, split: str = "train", **options) -> FolderDataset:
    """A folder of images/ and masks/ (``FolderDataset(root, split, **options)``)."""
    return FolderDataset(root, split, **options)


def labelme(root, split: str = "train", **options) -> LabelmeDataset:
    """A folder of labelme .json files beside their images (``LabelmeDataset``)."""
    return LabelmeDataset(root, split, **options)


def shapes(split: str = "train", **options) -> ShapesDataset:
    """The generated shapes dataset (``ShapesDataset(split, **options)``)."""
    return ShapesDataset(split, **options)


def voc(root, split: str = "train", **options) -> VOCSegmentation:
    """PASCAL VOC 2012 segmentation read from ``root``."""
    return VOCSegmentation(root, split, **options)


def ade20k(root, split: str = "train", **options) -> ADE20K:
    """ADE20K (ADEChallengeData2016) read from ``root``."""
    return ADE20K(root, split, **options)


def names() -> list[str]:
    """The dataset names the commands take (``--dataset``)."""
    return list(DATASETS)


build = build_dataset

__all__ = ["ade20k", "build", "folder", "labelme", "names", "shapes", "voc"]
