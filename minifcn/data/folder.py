"""Your own data: a folder of images and masks, with your own classes.

Layout (``python -m minifcn.example_data DIR`` writes one)::

    DIR/
        images/<name>.jpg       any image Pillow reads (JPEG, PNG, BMP, TIFF, WebP, ...)
        masks/<name>.png        the same <name>: a greyscale ('L') or palette ('P') PNG
                                whose pixel values are class ids; 255 = ignore
        classes.txt             optional: one class name per line, the first line is id 0

The train/val split comes from, in this order:

1. ``DIR/train/`` and ``DIR/val/``, each with its own ``images/`` and ``masks/``;
2. ``DIR/train.txt`` and ``DIR/val.txt``, one <name> of ``DIR/images`` per line;
3. otherwise a seeded random ``val_fraction`` of the images is the validation
   split (``notes`` says so, and the same seed always gives the same split).

Class names come from ``classes.txt``; without it, ``num_classes`` names them
``class_0``, ``class_1``, ... The ignore value (default 255) is never a class.

Everything that can be wrong with the folder is found before training and
listed one line each (``files.DataProblems``): an image without a mask or a
mask without an image, a split that is empty, a ``classes.txt`` with blank
lines or duplicate names. ``check_files`` then decodes every mask: a value that
is not a class id, a mask whose size differs from its image's, an RGB mask
(with how to convert it), a JPEG mask (lossy compression changes ids at edges).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .files import (
    _LABEL_MODES,
    DataError,
    DataProblems,
    SegmentationFiles,
    image_header,
    rgb_mask_advice,
)

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif")
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")
DEFAULT_VAL_FRACTION = 0.2


def image_suffixes() -> set[str]:
    """File name endings of the image formats Pillow can open (".jpg", ".png", ...)."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def read_class_names(path: Path, problems: list[str]) -> tuple[str, ...] | None:
    """The names in ``path`` (one a line, the first is id 0), or None when it is absent.

    Blank lines and duplicate names are appended to ``problems``, one line each.
    A last line ending in a newline is not a blank line.
    """
    path = Path(path)
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    names, seen = [], {}
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            problems.append(
                f"{path} line {number} is blank; every line names one class (the line "
                "number minus one is its id)"
            )
        elif name in seen:
            problems.append(
                f"{path} names {name!r} twice (lines {seen[name]} and {number}); class "
                "names must be unique"
            )
        else:
            seen[name] = number
        names.append(name)
    if not lines:
        problems.append(f"{path} is empty; write one class name per line")
    return tuple(names)


def resolve_classes(root: Path, num_classes, ignore_index: int, problems: list[str], names=None):
    """Class names from ``root/classes.txt`` (or ``names``), else ``num_classes``.

    Problems (no source, disagreeing counts, an ignore value that is a class id)
    are appended to ``problems``; returns the names (maybe empty)."""
    if names is None:
        names = read_class_names(root / "classes.txt", problems)
    if names is not None:
        if num_classes is not None and num_classes != len(names):
            problems.append(
                f"--num-classes {num_classes} disagrees with the {len(names)} classes of "
                f"{root} ({', '.join(names)})"
            )
    elif num_classes is None:
        problems.append(
            f"{root} has no classes.txt: write one (one class name per line, the first "
            "line is id 0) or pass the number of classes (--num-classes)"
        )
        names = ()
    else:
        names = tuple(f"class_{i}" for i in range(int(num_classes)))
    if names and not 0 <= ignore_index <= 255:
        problems.append(f"the ignore value must lie in 0..255, got {ignore_index}")
    elif names and ignore_index < len(names):
        problems.append(
            f"the ignore value {ignore_index} is also class {ignore_index} "
            f"({names[ignore_index]!r}); choose an ignore value of at least {len(names)}"
        )
    return names


def seeded_split(names: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """{"train": names, "val": names}: a random ``val_fraction`` (at least one, and never
    all when there are two or more) goes to val, drawn from ``seed``. The names are sorted
    first, so the split depends only on the names and the seed."""
    names = sorted(names)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    n_val = min(max(1, round(val_fraction * len(names))), max(len(names) - 1, 0))
    order = np.random.default_rng(seed).permutation(len(names))
    val = set(order[:n_val].tolist())
    return {
        "train": [n for i, n in enumerate(names) if i not in val],
        "val": [n for i, n in enumerate(names) if i in val],
    }


def read_list(path: Path, problems: list[str]) -> list[str]:
    """The names listed in ``path``, one a line (blank lines skipped; repeats reported)."""
    names, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            problems.append(f"{path} line {number} lists {name!r} a second time")
            continue
        seen.add(name)
        names.append(name)
    return names


def split_source(root: Path, lists: tuple[str, str] = ("train.txt", "val.txt")) -> str:
    """Where the split of ``root`` comes from: "folders", "lists" or "seeded"."""
    if (root / "train").is_dir() or (root / "val").is_dir():
        return "folders"
    if any((root / name).is_file() for name in lists):
        return "lists"
    return "seeded"


def _stems(folder: Path, suffixes, what: str, problems: list[str]) -> dict[str, Path]:
    """{stem: path} of the files in ``folder`` whose suffix is in ``suffixes``; two files
    of one stem are a problem. Hidden files are skipped; links are not followed."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_symlink() or not path.is_file():
            continue
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            problems.append(f"two {what}s named {path.stem!r}: {found[path.stem]} and {path}")
            continue
        found[path.stem] = path
    return found


def pair_folder(images_dir: Path, masks_dir: Path, problems: list[str]) -> dict[str, tuple]:
    """{stem: (image path, mask path)} of ``images_dir`` and ``masks_dir``; an image
    without a mask, a mask without an image and a lossy mask are problems."""
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            problems.append(f"folder {folder} not found")
    if problems and not (images_dir.is_dir() and masks_dir.is_dir()):
        return {}
    images = _stems(images_dir, image_suffixes(), "image", problems)
    masks = _stems(masks_dir, MASK_SUFFIXES + LOSSY_SUFFIXES, "mask", problems)
    for stem, mask in masks.items():
        if mask.suffix.lower() in LOSSY_SUFFIXES:
            problems.append(
                f"mask {mask} is {mask.suffix[1:].upper()}: its lossy compression changes "
                "class ids at every edge; save masks as PNG"
            )
        if stem not in images:
            problems.append(f"mask {mask} has no image (no {images_dir}/{stem}.*)")
    for stem, image in images.items():
        if stem not in masks:
            problems.append(f"image {image} has no mask (expected {masks_dir}/{stem}.png)")
    return {s: (images[s], masks[s]) for s in images if s in masks}


def folder_pairs(root: Path, val_fraction: float, seed: int, problems: list[str]):
    """({"train": [(image, mask), ...], "val": [...]}, notes) of a dataset folder."""
    notes = []
    source = split_source(root)
    splits = {}
    if source == "folders":
        for split in ("train", "val"):
            pairs = pair_folder(root / split / "images", root / split / "masks", problems)
            splits[split] = [pairs[s] for s in sorted(pairs)]
        notes.append(f"split: {root}/train and {root}/val")
    else:
        pairs = pair_folder(root / "images", root / "masks", problems)
        if source == "lists":
            for split in ("train", "val"):
                path = root / f"{split}.txt"
                if not path.is_file():
                    problems.append(
                        f"{root} has {'val' if split == 'train' else 'train'}.txt "
                        f"but no {split}.txt; write both lists or neither"
                    )
                    splits[split] = []
                    continue
                listed = [n if n in pairs else Path(n).stem for n in read_list(path, problems)]
                for name in listed:
                    if name not in pairs:
                        problems.append(
                            f"{path} lists {name!r}, which is not an image with a mask in "
                            f"{root / 'images'}"
                        )
                splits[split] = [pairs[n] for n in listed if n in pairs]
            both = {p[0] for p in splits["train"]} & {p[0] for p in splits["val"]}
            if both:
                problems.append(
                    f"{len(both)} image(s) are in both train.txt and val.txt, e.g. "
                    f"{sorted(both)[0].stem!r}"
                )
            notes.append(f"split: {root}/train.txt and {root}/val.txt")
        else:
            names = (
                seeded_split(list(pairs), val_fraction, seed)
                if len(pairs) > 1
                else {"train": list(pairs), "val": []}
            )
            splits = {k: [pairs[n] for n in v] for k, v in names.items()}
            notes.append(
                f"split: {root} has no train/ and val/ folders and no train.txt / val.txt, so "
                f"a random {val_fraction:.0%} of its {len(pairs)} images (seed {seed}) is the "
                f"validation split: {len(splits['train'])} train / {len(splits['val'])} val"
            )
    if not problems:
        for split, pairs in splits.items():
            if not pairs:
                problems.append(f"the {split} split of {root} is empty")
    return splits, notes


class FolderDataset(SegmentationFiles):
    """Your own images and masks: items are (float32 (3, H, W), int64 (H, W)).

    Args:
        root: the dataset folder (see the module docstring for the layout).
        split: "train" or "val".
        num_classes: the number of classes when there is no ``classes.txt``
            (given with one, it must agree).
        ignore_index: the mask value that marks pixels to ignore (default 255).
        val_fraction: the share of the images that goes to val when the folder
            does not say which images are which.
        crop_size, scale_range, flip: augmentation, see ``transforms.SegmentationTransform``.
        seed: seeds the augmentation.
        split_seed: seeds the split when it is made here (not the training seed, so
            runs with different seeds are validated on the same images).

    Raises ``DataProblems`` (a ``DataError``) listing every problem with the
    folder's structure, and with the files of the pairs found when there is one.
    ``notes`` holds lines to print (where the split came from).
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
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        self.ignore_index = int(ignore_index)
        problems: list[str] = []
        self.class_names = resolve_classes(self.root, num_classes, self.ignore_index, problems)
        splits, self.notes = folder_pairs(self.root, val_fraction, split_seed, problems)
        super().__init__(splits[split], split, crop_size, scale_range, flip, seed)
        if problems:
            if self.class_names:  # the file checks need the number of classes
                for pairs in splits.values():
                    problems += self._check_pairs(pairs)
            raise DataProblems(list(dict.fromkeys(problems)), self.root)

    def check_files(self, progress=None) -> list[str]:
        """One line per unusable pair: unreadable or cut-short files, a mask that is RGB,
        a mask whose size differs from its image's, a mask value that is not a class id
        (the first one). Decodes every mask (not the images)."""
        return self._check_pairs(self.pairs, progress)

    def _check_pairs(self, pairs, progress=None) -> list[str]:
        problems, seen = [], set()
        for image_path, mask_path in pairs if progress is None else progress(pairs):
            try:
                size = image_header(image_path)
            except DataError as err:
                problems.append(str(err))
                size = None
            problem = check_mask(
                mask_path, size, image_path, self.num_classes, self.ignore_index, seen
            )
            if problem:
                problems.append(problem)
        if pairs and not problems and seen <= {0, self.ignore_index} and self.ignore_index in seen:
            problems.append(
                f"every mask of the {self.split} split holds only the values 0 and "
                f"{self.ignore_index}, the ignore value: nothing but class 0 would be learned. "
                f"If {self.ignore_index} marks your objects, save them as class id 1 instead"
            )
        return problems


def check_mask(
    path: Path, size, image_path, num_classes: int, ignore_index: int, seen=None
) -> str | None:
    """What is wrong with mask ``path`` (one line), or None.

    ``size``: (height, width) of its image, or None when unknown. ``seen``: a set
    the mask's values are added to."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("RGB", "RGBA"):
                return rgb_mask_advice(path)
            if mode not in _LABEL_MODES:
                return (
                    f"mask {path} has mode {mode!r}; expected a greyscale ('L') or palette "
                    "('P') PNG whose pixel values are class ids"
                )
            values = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as err:
        return f"cannot read mask {path}: {err}"
    h, w = values.shape[:2]
    if size is not None and (h, w) != tuple(size):
        return (
            f"mask {path} is {w}x{h} but its image {image_path} is {size[1]}x{size[0]} "
            "(width x height)"
        )
    if seen is not None:
        seen.update(np.unique(values).tolist())
    bad = (values >= num_classes) & (values != ignore_index)
    if bad.any():
        value = int(values[bad].ravel()[0])
        y, x = (int(v[0]) for v in np.nonzero(bad))
        return (
            f"mask {path} has value {value} at x={x}, y={y}: not a class id (0..{num_classes - 1}"
            f") nor the ignore value {ignore_index}"
        )
    return None
