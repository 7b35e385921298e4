"""Reading (image, label) file pairs from disk: what the VOC and ADE20K readers share.

A reader subclasses ``SegmentationFiles``: it finds its file pairs, sets the
class names, and says how raw label values map to class ids (``map_label``).
Files are opened only in ``__getitem__``, so building a dataset over thousands
of images costs a directory listing, not thousands of decodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .transforms import VGG_MEAN_RGB, SegmentationTransform

_LABEL_MODES = ("P", "L", "I", "I;16")


def read_image(path: Path) -> np.ndarray:
    """The RGB pixels of an image file as uint8 (H, W, 3).

    Raises FileNotFoundError for a missing file and ValueError for one Pillow
    cannot decode (corrupt, truncated, not an image); both name the path.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from err


def read_label(path: Path) -> np.ndarray:
    """The pixel values of a label PNG (palette 'P' or greyscale 'L') as uint8 (H, W).

    For a palette PNG these are the palette indices, i.e. the class ids, not
    the colours. An RGB label image is refused with a ValueError.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in _LABEL_MODES:
                raise ValueError(
                    f"label image {path} has mode {im.mode!r}; expected a palette ('P') or "
                    "greyscale ('L') PNG whose pixel values are class ids"
                )
            label = np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"label file not found: {path}") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode label image {path}: {err}") from err
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"label image {path} has value {label.max()} above 255")
        label = label.astype(np.uint8)
    return label


def check_label_values(label: np.ndarray, num_ids: int, ignore_index: int, path) -> None:
    """Raise ValueError naming ``path`` and the value unless every value of ``label``
    is in 0..num_ids-1 or equals ``ignore_index``."""
    bad = (label >= num_ids) & (label != ignore_index)
    if bad.any():
        value = int(label[bad][0])
        raise ValueError(
            f"label file {path} has value {value}: expected class ids 0..{num_ids - 1} "
            f"or the ignore label {ignore_index}"
        )


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else FileNotFoundError saying what was expected."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a directory")
    return path


class SegmentationFiles:
    """A dataset over a list of (image path, label path) pairs, read lazily.

    Subclasses set ``class_names`` and may override ``map_label``. Items are
    ``(image float32 (3, H, W) mean-subtracted RGB, label int64 (H, W))``.

    Random augmentation of item ``i`` draws from a generator seeded with
    ``(seed, epoch, i)``: the same item in the same epoch is always the same
    crop, whatever the access order (so a resumed run sees the same data), and
    ``set_epoch`` gives each epoch new crops.
    """

    class_names: tuple[str, ...] = ()
    ignore_index = 255

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        split: str,
        crop_size=None,
        scale_range=None,
        flip: bool = False,
        seed: int = 0,
    ):
        self.pairs = list(pairs)
        self.split = split
        self.seed = int(seed)
        self.epoch = 0
        self.mean = np.asarray(VGG_MEAN_RGB, dtype=np.float32)
        self.transform = SegmentationTransform(
            crop_size, scale_range, flip, self.mean, self.ignore_index
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def set_epoch(self, epoch: int) -> None:
        """Select the random augmentations of epoch ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def _index(self, i: int) -> int:
        n = len(self.pairs)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {type(self).__name__} of length {n}")
        return i % n

    def map_label(self, label: np.ndarray, path: Path) -> np.ndarray:
        """Raw label values uint8 (H, W) -> class ids / ignore uint8 (H, W); checks values."""
        check_label_values(label, self.num_classes, self.ignore_index, path)
        return label

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` before any transform: (uint8 (H, W, 3), class ids uint8 (H, W))."""
        image_path, label_path = self.pairs[self._index(i)]
        image = read_image(image_path)
        label = self.map_label(read_label(label_path), label_path)
        if label.shape != image.shape[:2]:
            raise ValueError(
                f"label {label_path} has size {label.shape} but image {image_path} "
                f"has size {image.shape[:2]}"
            )
        return image, label

    def raw_image(self, i: int) -> np.ndarray:
        """The untransformed RGB image of item ``i``, uint8 (H, W, 3)."""
        return read_image(self.pairs[self._index(i)][0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = self._index(i)
        image, label = self.read(i)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        return self.transform(image, label, rng)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, n={len(self)}, "
            f"num_classes={self.num_classes}, {self.transform})"
        )
