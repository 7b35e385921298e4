"""Build a dataset from its name, as the command line and the notebooks do."""

from __future__ import annotations

from .ade20k import ADE20K
from .shapes import ShapesDataset
from .voc import VOCSegmentation

DATASETS = ("shapes", "voc", "ade20k")

_ON_DISK = {
    "voc": (VOCSegmentation, "the folder VOCdevkit/VOC2012 (or the folder holding VOCdevkit)"),
    "ade20k": (ADE20K, "the folder ADEChallengeData2016 (or the folder holding it)"),
}


def build_dataset(name: str, split: str, data_root=None, **kwargs):
    """The dataset ``name`` ("shapes", "voc", "ade20k") for ``split`` ("train" or "val").

    ``shapes`` is generated in memory (``kwargs``: size, image_size, seed) and
    ignores ``data_root``. ``voc`` and ``ade20k`` are read from ``data_root``
    (``kwargs``: crop_size, scale_range, flip, seed).
    """
    if name == "shapes":
        return ShapesDataset(split, **kwargs)
    if name not in _ON_DISK:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    cls, where = _ON_DISK[name]
    if data_root is None:
        raise ValueError(
            f"dataset {name!r} is read from disk: pass --data-root pointing at {where}"
        )
    return cls(data_root, split, **kwargs)
