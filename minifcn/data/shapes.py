"""A synthetic segmentation dataset, generated from a seed: no download needed.

Each 96 x 96 image shows 1 or 2 objects of four classes (disk, rectangle,
triangle, cross) on a textured background. It is built so that a small FCN
trained from scratch on a CPU for a few minutes learns it, while what FCN's
skip connections are for still shows:

* an object's colour is drawn independently of its class, so only its shape
  tells the class; it always contrasts with what lies under it, so every
  object can be found;
* objects are 36 to 78 pixels across: big enough for FCN-32s's stride-32
  score map (3 x 3 cells for a 96-pixel image) to place and name each one, as
  a blob; but their corners, a cross's arms (13 to 35 px thick) and the
  notches between the arms are finer than 32 pixels, so only the stride-16 and
  stride-8 skips can draw them;
* objects may overlap a little; the one drawn later hides the earlier one,
  and the label shows what is visible;
* the background has a colour gradient, a slow wave, sometimes stripes, and
  every pixel gets mild noise.

Everything comes from ``numpy.random.default_rng(seed)``: the same seed gives
the same images, bit for bit, on every machine.
"""

from __future__ import annotations

import math

import numpy as np

from .transforms import VGG_MEAN_RGB, normalize

CLASS_NAMES = ("background", "disk", "rectangle", "triangle", "cross")
DISK, RECTANGLE, TRIANGLE, CROSS = 1, 2, 3, 4

DEFAULT_SIZES = {"train": 2000, "val": 200}
DEFAULT_IMAGE_SIZE = 96
_SPLIT_IDS = {"train": 0, "val": 1}

# Sizes are given for 96 x 96 images and scale with image_size.
_MAX_EXTENT = 78.0
_MIN_EXTENT = {DISK: 36.0, RECTANGLE: 36.0, TRIANGLE: 42.0, CROSS: 42.0}
_MIN_CONTRAST = 100.0  # least RGB distance between an object and what lies under it
_CROSS_ARM = (0.32, 0.45)  # arm thickness / extent of a cross
_RECT_ASPECT = (0.35, 1.0)  # width / length of a rectangle
_TRIANGLE_JITTER = 0.3  # radians each corner's angle may move
_MAX_HIDDEN = 0.15  # a new object may hide at most this fraction of an earlier visible one
_NOISE_STD = 6.0
_STRIPES = 0.5  # share of backgrounds with faint stripes
_OBJECT_COUNTS = (1, 2)  # objects per image
_OBJECT_COUNT_PROBS = (0.5, 0.5)


def _rotated(xx, yy, cx, cy, angle):
    """Pixel coordinates (H, W) in a frame centred on (cx, cy) and rotated by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xx - cx, yy - cy
    return c * dx + s * dy, -s * dx + c * dy


def _shape_mask(cls, extent, rng, xx, yy, cx, cy):
    """Boolean mask (H, W) of one object of class ``cls`` whose size is about ``extent`` px."""
    if cls == DISK:  # a disk, at most slightly squashed
        r = extent / 2
        u, v = _rotated(xx, yy, cx, cy, rng.uniform(0, math.pi))
        aspect = rng.uniform(0.75, 1.0)
        return (u / r) ** 2 + (v / (r * aspect)) ** 2 <= 1.0
    if cls == RECTANGLE:
        u, v = _rotated(xx, yy, cx, cy, rng.uniform(0, math.pi))
        width, length = extent * rng.uniform(*_RECT_ASPECT), extent
        return (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    if cls == TRIANGLE:  # three corners about the centre, angles jittered
        r = 0.6 * extent
        angles = rng.uniform(0, 2 * math.pi) + np.arange(3) * (2 * math.pi / 3)
        angles = angles + rng.uniform(-_TRIANGLE_JITTER, _TRIANGLE_JITTER, 3)
        px, py = cx + r * np.cos(angles), cy + r * np.sin(angles)
        inside = np.ones(xx.shape, dtype=bool)
        for k in range(3):  # left of every edge of a counter-clockwise polygon
            ax, ay, bx, by = px[k], py[k], px[(k + 1) % 3], py[(k + 1) % 3]
            inside &= (bx - ax) * (yy - ay) - (by - ay) * (xx - ax) >= 0
        return inside
    if cls == CROSS:  # a plus sign
        u, v = _rotated(xx, yy, cx, cy, rng.uniform(0, math.pi / 2))
        half = extent / 2
        t = extent * rng.uniform(*_CROSS_ARM) / 2  # half the arm thickness
        au, av = np.abs(u), np.abs(v)
        return ((au <= half) & (av <= t)) | ((av <= half) & (au <= t))
    raise ValueError(f"unknown shape class {cls}")


def _background(rng, xx, yy, size):
    """A textured background, float32 (H, W, 3) on the 0..255 scale."""
    base = rng.uniform(40, 215, 3).astype(np.float32)
    u, v = _rotated(xx, yy, size / 2, size / 2, rng.uniform(0, 2 * math.pi))
    ramp = (u / size)[..., None] * rng.uniform(-70, 70, 3).astype(np.float32)
    wavelength = size * rng.uniform(0.8, 2.0)
    wave = np.sin(2 * math.pi * v / wavelength + rng.uniform(0, 2 * math.pi))
    image = base + ramp + wave[..., None] * rng.uniform(-25, 25, 3).astype(np.float32)
    if rng.random() < _STRIPES:  # faint stripes
        su, _ = _rotated(xx, yy, 0.0, 0.0, rng.uniform(0, math.pi))
        stripes = np.sin(2 * math.pi * su / rng.uniform(5.0, 14.0))
        image += (rng.uniform(6, 18) * stripes)[..., None]
    return image


def _object_colour(rng, under):
    """An RGB colour (3,) at least _MIN_CONTRAST from ``under`` (3,); else the farthest of 32."""
    candidates = rng.uniform(0, 255, (32, 3)).astype(np.float32)
    distance = np.linalg.norm(candidates - under, axis=1)
    good = np.flatnonzero(distance >= _MIN_CONTRAST)
    return candidates[good[0]] if good.size else candidates[np.argmax(distance)]


def _draw_image(rng, xx, yy, size):
    """One image float32 (H, W, 3) and its label uint8 (H, W)."""
    scale = size / 96.0
    image = _background(rng, xx, yy, size)
    label = np.zeros(xx.shape, dtype=np.uint8)
    owner = np.full(xx.shape, -1, dtype=np.int16)  # which object each pixel shows
    areas = []  # visible pixels of each object when it was drawn
    for _ in range(int(rng.choice(_OBJECT_COUNTS, p=_OBJECT_COUNT_PROBS))):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        low, high = _MIN_EXTENT[cls] * scale, _MAX_EXTENT * scale
        for _ in range(20):  # placements that would hide too much of another object are retried
            extent = rng.uniform(low, high)
            margin = 0.45 * extent  # at most a sliver may leave the image
            cx, cy = rng.uniform(margin, size - margin, 2)
            mask = _shape_mask(cls, extent, rng, xx, yy, cx, cy)
            if mask.sum() < 4:
                continue
            hidden = np.bincount(owner[mask & (owner >= 0)], minlength=len(areas))
            visible = np.bincount(owner[owner >= 0], minlength=len(areas))
            if np.all(visible - hidden >= (1 - _MAX_HIDDEN) * np.asarray(areas, dtype=float)):
                break
        else:
            continue
        colour = _object_colour(rng, image[mask].mean(axis=0))
        u, _ = _rotated(xx, yy, cx, cy, rng.uniform(0, 2 * math.pi))
        shading = (u / max(extent, 1.0))[..., None] * rng.uniform(-20, 20)
        image = np.where(mask[..., None], colour + shading, image)
        label[mask] = cls
        owner[mask] = len(areas)
        areas.append(int(mask.sum()))
    image += rng.normal(0.0, _NOISE_STD, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def make_shapes(n: int, image_size: int | None = None, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` images and labels.

    Args:
        n: number of images.
        image_size: side length S of the square images (at least 16; default 96).
        seed: int (or tuple of ints) seeding ``numpy.random.default_rng``.

    Returns:
        images: uint8 (n, S, S, 3) RGB.
        labels: uint8 (n, S, S), class ids into ``CLASS_NAMES`` (0 = background).
    """
    image_size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if n < 0:
        raise ValueError(f"number of images must be >= 0, got {n}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    rng = np.random.default_rng(seed)
    centres = np.arange(image_size, dtype=np.float32) + 0.5  # sample at pixel centres
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty((n, image_size, image_size), dtype=np.uint8)
    for i in range(n):
        images[i], labels[i] = _draw_image(rng, xx, yy, image_size)
    return images, labels


class ShapesDataset:
    """The synthetic shapes dataset, generated in memory when constructed.

    Args:
        split: "train" or "val"; each split has its own seed derived from ``seed``,
            so the two never share images.
        size: number of images (default 3000 for train, 200 for val).
        image_size: side length S of the square images.
        seed: base seed.
        augment: give each item a random quarter turn and mirror flip (the classes
            do not change under either). The choice comes from (seed, epoch, i),
            so call ``set_epoch`` each epoch for new ones; the same epoch always
            gives the same items, whatever the order they are read in.

    ``dataset[i]`` is (image float32 (3, S, S) RGB minus ``mean``, label int64 (S, S)).
    """

    class_names = CLASS_NAMES
    num_classes = len(CLASS_NAMES)
    ignore_index = 255

    def __init__(
        self,
        split: str = "train",
        size: int | None = None,
        image_size: int | None = None,
        seed=0,
        augment: bool = False,
    ):
        if split not in _SPLIT_IDS:
            raise ValueError(f"shapes split must be 'train' or 'val', got {split!r}")
        self.split = split
        self.size = DEFAULT_SIZES[split] if size is None else int(size)
        self.image_size = int(DEFAULT_IMAGE_SIZE if image_size is None else image_size)
        self.seed = int(seed)
        self.mean = np.asarray(VGG_MEAN_RGB, dtype=np.float32)
        self.augment = augment
        self.epoch = 0
        self.images, self.labels = make_shapes(
            self.size, self.image_size, seed=(self.seed, _SPLIT_IDS[split])
        )

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.images[i], self.labels[i]
        if self.augment:
            rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], self.epoch, i])
            turns = int(rng.integers(4))
            image, label = np.rot90(image, turns, (0, 1)), np.rot90(label, turns)
            if rng.random() < 0.5:
                image, label = image[:, ::-1], label[:, ::-1]
        return normalize(image, self.mean), np.ascontiguousarray(label, dtype=np.int64)

    def raw_image(self, i: int) -> np.ndarray:
        """The RGB image of item ``i``, uint8 (S, S, 3)."""
        return self.images[i]

    def class_pixel_counts(self) -> np.ndarray:
        """int64 (num_classes,): how many pixels of each class the split holds."""
        return np.bincount(self.labels.ravel(), minlength=self.num_classes).astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(split={self.split!r}, size={self.size}, "
            f"image_size={self.image_size}, seed={self.seed})"
        )
