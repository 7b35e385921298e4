"""Every dataset by name, with its own defaults: the commands read choices and defaults here.

A ``DatasetSpec`` says how to build a dataset and what a run on it starts from
(backbone, class names, whether batches need crops, the evaluation batch), so
no command needs an ``if dataset == ...`` branch. ``DATASETS`` maps each name
to its spec; ``build_dataset(name, split, data_root, **kw)`` builds one split,
and ``dataset_kwargs`` turns command-line settings into those keywords.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ade20k import ADE20K, ADE20K_CLASS_NAMES
from .folder import DEFAULT_VAL_FRACTION, FolderDataset
from .labelme import LabelmeDataset
from .shapes import CLASS_NAMES, DEFAULT_IMAGE_SIZE, DEFAULT_SIZES, ShapesDataset
from .voc import VOC_CLASS_NAMES, VOCSegmentation

SCALE_RANGE = (0.75, 1.25)  # random rescaling of training images, with random crops


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset's recipe and defaults.

    Attributes:
        name: the ``--dataset`` value.
        summary: one line for ``--help``.
        cls: the dataset class, called as ``cls(split, **kw)`` (generated) or
            ``cls(data_root, split, **kw)`` (read from disk).
        root_hint: what ``--data-root`` points at; None for a generated dataset.
        config: the backbone a run starts from ("mini" or "paper").
        class_names: the fixed class names, or None when the data names them.
        same_size: every image has one size, so batches > 1 need no crops.
        eval_batch: images per validation / evaluation batch.
        own_classes: the number of classes and the ignore value come from the
            user (``num_classes``, ``ignore_index``, ``val_fraction`` options).
        sizes: {split: number of images} of a generated dataset.
        image_size: the side of a generated dataset's images.
    """

    name: str
    summary: str
    cls: type
    root_hint: str | None
    config: str = "paper"
    class_names: tuple | None = None
    same_size: bool = False
    eval_batch: int = 1
    own_classes: bool = False
    sizes: dict | None = None
    image_size: int | None = None

    @property
    def on_disk(self) -> bool:
        return self.root_hint is not None


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "shapes",
            "synthetic shapes, generated from the seed (nothing to download)",
            ShapesDataset,
            None,
            config="mini",
            class_names=CLASS_NAMES,
            same_size=True,
            eval_batch=8,
            sizes=dict(DEFAULT_SIZES),
            image_size=DEFAULT_IMAGE_SIZE,
        ),
        DatasetSpec(
            "voc",
            "PASCAL VOC 2012 segmentation, 21 classes",
            VOCSegmentation,
            "the folder VOCdevkit/VOC2012 (or the folder holding VOCdevkit)",
            class_names=VOC_CLASS_NAMES,
        ),
        DatasetSpec(
            "ade20k",
            "ADE20K scene parsing (ADEChallengeData2016), 150 classes",
            ADE20K,
            "the folder ADEChallengeData2016 (or the folder holding it)",
            class_names=ADE20K_CLASS_NAMES,
        ),
        DatasetSpec(
            "folder",
            "your own images/ and masks/ (class ids as grey or palette PNGs)",
            FolderDataset,
            "your dataset folder, holding images/ and masks/ (docs/your-data.md)",
            config="mini",
            own_classes=True,
        ),
        DatasetSpec(
            "labelme",
            "your own labelme .json annotations beside their images",
            LabelmeDataset,
            "the folder of labelme .json files and their images (docs/your-data.md)",
            config="mini",
            own_classes=True,
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; ValueError listing the names for an unknown one."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def datasets_help() -> str:
    """One clause per dataset, for a ``--dataset`` help text."""
    return "; ".join(f"{s.name}: {s.summary}" for s in DATASETS.values())


def dataset_kwargs(name: str, split: str, settings: dict, augment: bool = False) -> dict:
    """Keywords of ``build_dataset(name, split, ...)`` from command-line ``settings``.

    ``settings`` holds the flags' values by destination (``seed``, ``train_size``,
    ``val_size``, ``crop_size``, ``num_classes``, ``ignore_index``,
    ``val_fraction``); missing or None means the dataset's default. ``augment``:
    the training split's random augmentation (shapes: quarter turns and flips; from
    disk: flips, and random crops with rescaling when ``crop_size`` is set).
    """
    spec = get_spec(name)
    seed = settings.get("seed") or 0
    kw: dict = {"seed": seed}
    if not spec.on_disk:
        size = settings.get(f"{split}_size")
        if size:
            kw["size"] = size
        if augment:
            kw["augment"] = True
        return kw
    if spec.own_classes:
        for key in ("num_classes", "ignore_index", "val_fraction"):
            if settings.get(key) is not None:
                kw[key] = settings[key]
    if augment:
        crop = settings.get("crop_size")
        kw.update(crop_size=crop, flip=True, scale_range=SCALE_RANGE if crop else None)
    elif not spec.own_classes:
        kw = {}
    return kw


def build_dataset(name: str, split: str, data_root=None, **kwargs):
    """The dataset ``name`` (a key of ``DATASETS``) for ``split`` ("train" or "val").

    ``shapes`` is generated in memory (``kwargs``: size, image_size, seed, augment)
    and ignores ``data_root``. The others are read from ``data_root`` (``kwargs``:
    crop_size, scale_range, flip, seed; folder and labelme also num_classes,
    ignore_index, val_fraction).
    """
    spec = get_spec(name)
    if not spec.on_disk:
        return spec.cls(split, **kwargs)
    if data_root is None:
        raise ValueError(
            f"dataset {name!r} is read from disk: pass --data-root pointing at {spec.root_hint}"
        )
    return spec.cls(data_root, split, **kwargs)


__all__ = [
    "DATASETS",
    "DEFAULT_VAL_FRACTION",
    "DatasetSpec",
    "build_dataset",
    "dataset_kwargs",
    "datasets_help",
    "get_spec",
]
