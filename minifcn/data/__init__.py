"""Datasets (synthetic shapes, PASCAL VOC 2012, ADE20K, your own folder or labelme files),
augmentation, batching, colours."""

from .ade20k import ADE20K, ADE20K_CLASS_NAMES
from .files import DataError, DataProblems
from .folder import FolderDataset
from .labelme import LabelmeDataset
from .loader import iterate_batches, num_batches
from .palette import PALETTE, colorize, make_palette, overlay
from .registry import DATASETS, DatasetSpec, build_dataset, dataset_kwargs, get_spec
from .shapes import CLASS_NAMES, ShapesDataset, make_shapes
from .transforms import VGG_MEAN_RGB, SegmentationTransform, denormalize, normalize
from .voc import VOC_CLASS_NAMES, VOCSegmentation

__all__ = [
    "ADE20K",
    "ADE20K_CLASS_NAMES",
    "CLASS_NAMES",
    "DATASETS",
    "DataError",
    "DataProblems",
    "DatasetSpec",
    "FolderDataset",
    "LabelmeDataset",
    "PALETTE",
    "VGG_MEAN_RGB",
    "VOC_CLASS_NAMES",
    "SegmentationTransform",
    "ShapesDataset",
    "VOCSegmentation",
    "build_dataset",
    "dataset_kwargs",
    "get_spec",
    "colorize",
    "denormalize",
    "iterate_batches",
    "make_palette",
    "make_shapes",
    "normalize",
    "num_batches",
    "overlay",
]
