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

from .transforms import VGG_MEAN_RGB, SegmentationTransform, pad_to

_LABEL_MODES = ("P", "L", "I", "I;16")
# What Pillow raises for an image file it cannot or will not decode: damaged data, and
# images whose declared size exceeds its decompression-bomb limit (Image.MAX_IMAGE_PIXELS).
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class DataError(ValueError):
    """A data file that cannot be used: missing, corrupt, wrong size or bad label values.

    The message names the file. Raised when an item is read (and by ``check_files``).
    """


class DataProblems(DataError):
    """Everything wrong with a dataset folder, found at once: ``problems`` holds one
    line per problem, and the message lists them all."""

    def __init__(self, problems: list[str], where):
        self.problems = list(problems)
        lines = "\n".join(f"error: {p}" for p in self.problems)
        super().__init__(
            f"{len(self.problems)} problem(s) with the data in {where}, found before any "
            f"training (nothing was written):\n{lines}"
        )


def read_image(path: Path) -> np.ndarray:
    """The RGB pixels of an image file as uint8 (H, W, 3).

    Raises FileNotFoundError for a missing file and DataError (a ValueError) for one Pillow
    cannot decode (corrupt, truncated, not an image); both name the path.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except _UNREADABLE as err:
        raise DataError(f"cannot decode image {path}: {err}") from None


def read_label(path: Path) -> np.ndarray:
    """The pixel values of a label PNG (palette 'P' or greyscale 'L') as uint8 (H, W).

    For a palette PNG these are the palette indices, i.e. the class ids, not
    the colours. An RGB label image is refused with a ValueError.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in _LABEL_MODES:
                raise DataError(
                    f"label image {path} has mode {im.mode!r}; expected a palette ('P') or "
                    "greyscale ('L') PNG whose pixel values are class ids"
                )
            label = np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"label file not found: {path}") from None
    except DataError:
        raise
    except _UNREADABLE as err:
        raise DataError(f"cannot decode label image {path}: {err}") from None
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise DataError(f"label image {path} has value {label.max()} above 255")
        label = label.astype(np.uint8)
    return label


def check_label_values(label: np.ndarray, num_ids: int, ignore_index: int, path) -> None:
    """Raise ValueError naming ``path`` and the value unless every value of ``label``
    is in 0..num_ids-1 or equals ``ignore_index``."""
    bad = (label >= num_ids) & (label != ignore_index)
    if bad.any():
        value = int(label[bad][0])
        raise DataError(
            f"label file {path} has value {value}: expected class ids 0..{num_ids - 1} "
            f"or the ignore label {ignore_index}"
        )


def _looks_truncated(path: Path, fmt: str | None) -> bool:
    """A cheap look at a file's last bytes: a JPEG ends with the EOI marker (FF D9), a
    PNG with its IEND chunk. Missing ones mean the file was cut short."""
    if fmt not in ("JPEG", "PNG"):
        return False
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 1024))
        tail = f.read()
    if fmt == "JPEG":
        return b"\xff\xd9" not in tail
    return b"IEND" not in tail[-16:]


def image_header(path: Path, label: bool = False) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding the pixels.

    DataError naming the file when it is missing, not an image Pillow can read,
    cut short, or (for ``label``) not a palette/greyscale image.
    """
    what = "label image" if label else "image"
    try:
        with Image.open(path) as im:
            width, height = im.size
            mode, fmt = im.mode, im.format
    except FileNotFoundError:
        raise DataError(f"{what} file not found: {path}") from None
    except _UNREADABLE as err:
        raise DataError(f"cannot read {what} {path}: {err}") from None
    if label and mode not in _LABEL_MODES:
        raise DataError(
            f"label image {path} has mode {mode!r}; expected a palette ('P') or greyscale "
            "('L') PNG whose pixel values are class ids"
        )
    if _looks_truncated(path, fmt):
        raise DataError(f"{what} {path} is truncated (its {fmt} end marker is missing)")
    return height, width


def read_split_file(path: Path) -> list[str]:
    """The image ids a split file lists, one per line (blank lines skipped).

    The file is UTF-8, with or without a byte-order mark (Windows editors add one).
    DataError naming the file and line for text that is not UTF-8, an id listed
    twice, or an id that is not a plain file name (``/``, ``\\``, ``..``), which
    would read files outside the dataset's folders.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"split file {path} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    ids, seen = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if any(c in name for c in "/\\\0") or name in (".", ".."):
            raise DataError(f"split file {path}, line {number}: {name!r} is not an image id")
        if name in seen:
            raise DataError(
                f"split file {path} lists {name!r} twice (lines {seen[name]} and {number}); "
                "each image may appear once"
            )
        seen[name] = number
        ids.append(name)
    return ids


def rgb_mask_advice(path: Path) -> str:
    """What to tell the owner of an RGB(A) mask ``path``: how to turn it into class ids."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    if grey:
        how = (
            "its three channels are equal, so its grey values are the ids: convert it with "
            "PIL.Image.open(path).convert('L').save(path)"
        )
    else:
        n = len(np.unique(rgb.reshape(-1, 3), axis=0))
        how = (
            f"it holds {n} colours: map each colour to its class id and save the ids as a "
            "greyscale ('L') or palette ('P') PNG"
        )
    return (
        f"mask {path} is an {im.mode} image; a mask holds one class id per pixel, not a "
        f"colour ({how})"
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
    # side -> the side the network takes (``sizes.fit_sizes`` sets it): each item is
    # padded at the bottom/right, the label with the ignore value, up to that size.
    fit_side = None

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
        try:
            image = read_image(image_path)
            label = self.map_label(read_label(label_path), label_path)
        except FileNotFoundError as err:  # listed when the dataset was built, gone since
            raise DataError(str(err)) from None
        if label.shape != image.shape[:2]:
            raise DataError(
                f"label {label_path} has size {label.shape} but image {image_path} "
                f"has size {image.shape[:2]}"
            )
        return image, label

    def check_files(self, progress=None) -> list[str]:
        """One message per unusable (image, label) pair, found cheaply before training.

        Opens every image and label header (no pixels are decoded): each must be a
        readable, complete image file, the label a palette/greyscale image, and
        both of the same size. Label values are checked when an item is read.
        ``progress``: optional wrapper of the iteration (e.g. tqdm).
        """
        problems = []
        pairs = self.pairs if progress is None else progress(self.pairs)
        for image_path, label_path in pairs:
            sizes = []
            for path, is_label in ((image_path, False), (label_path, True)):
                try:
                    sizes.append(image_header(path, label=is_label))
                except DataError as err:
                    problems.append(str(err))
            if len(sizes) == 2 and sizes[0] != sizes[1]:
                problems.append(
                    f"label {label_path} is {sizes[1][1]}x{sizes[1][0]} but image "
                    f"{image_path} is {sizes[0][1]}x{sizes[0][0]} (width x height)"
                )
        return problems

    def image_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every image, from the file headers (read once, then kept).

        DataError naming the first file whose header cannot be read."""
        if getattr(self, "_sizes", None) is None:
            self._sizes = [image_header(image) for image, _ in self.pairs]
        return self._sizes

    def raw_image(self, i: int) -> np.ndarray:
        """The untransformed RGB image of item ``i``, uint8 (H, W, 3)."""
        return read_image(self.pairs[self._index(i)][0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = self._index(i)
        image, label = self.read(i)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        image, label = self.transform(image, label, rng)
        if self.fit_side is not None:
            h, w = label.shape
            image, label = pad_to(
                image, label, self.fit_side(h), self.fit_side(w), self.ignore_index
            )
        return image, label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, n={len(self)}, "
            f"num_classes={self.num_classes}, {self.transform})"
        )
