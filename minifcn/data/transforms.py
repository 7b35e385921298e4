"""Preprocessing and augmentation shared by every dataset reader.

An example goes through these steps, in this order (``SegmentationTransform``):

1. random scale: the image is resized bilinearly, the label with nearest
   neighbour (a label is a class id, so it must never be interpolated);
2. random horizontal flip, image and label together;
3. mean subtraction: uint8 RGB (H, W, 3) -> float32 (3, H, W), minus the
   per-channel mean (the VGG/ImageNet mean by default, as FCN does);
4. random crop to ``crop_size``; an image smaller than the crop is first padded
   at the bottom/right, the image with 0 (the mean, after subtraction) and the
   label with the ignore label, so padding adds no loss and no metric counts.

Every random choice is drawn from a ``numpy.random.Generator`` passed in, so a
caller that seeds the generator gets the same example every time.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Per-channel mean of the ImageNet training images in RGB order, on the 0..255
# scale: the mean the VGG16 weights used by FCN expect to have been subtracted.
VGG_MEAN_RGB = (122.675, 116.669, 104.008)


def _check_pair(image: np.ndarray, label: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    if label.shape != image.shape[:2]:
        raise ValueError(f"label shape {label.shape} does not match image shape {image.shape[:2]}")


def normalize(image: np.ndarray, mean=VGG_MEAN_RGB) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (3, H, W) with ``mean`` (3,) subtracted."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    return image.transpose(2, 0, 1).astype(np.float32) - mean


def denormalize(image, mean=VGG_MEAN_RGB) -> np.ndarray:
    """The inverse of ``normalize``: float (3, H, W) -> uint8 RGB (H, W, 3), clipped."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {image.shape}")
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    rgb = image.astype(np.float32) + mean
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def rescale(image: np.ndarray, label: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize uint8 image (H, W, 3) bilinearly and uint8 label (H, W) nearest by ``scale``.

    Returns arrays of shape (h, w, 3) and (h, w) with h = round(H * scale) (at least 1).
    """
    _check_pair(image, label)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"label values must lie in 0..255 to be resized, got {label.max()}")
        label = label.astype(np.uint8)
    h, w = label.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow wants (width, height)
    if size == (w, h):
        return image, label
    image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
    return image, label


def hflip(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image (H, W, C) and label (H, W) left-right together."""
    return image[:, ::-1].copy(), label[:, ::-1].copy()


def pad_to(
    image: np.ndarray, label: np.ndarray, height: int, width: int, ignore_index: int = 255
) -> tuple[np.ndarray, np.ndarray]:
    """Pad a normalised image (3, H, W) with 0 and its label (H, W) with ``ignore_index``
    at the bottom and right, to at least (height, width)."""
    h, w = label.shape
    ph, pw = max(0, height - h), max(0, width - w)
    if ph == 0 and pw == 0:
        return image, label
    image = np.pad(image, ((0, 0), (0, ph), (0, pw)), constant_values=0)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=ignore_index)
    return image, label


def random_crop(
    image: np.ndarray,
    label: np.ndarray,
    crop_size: int | tuple[int, int],
    rng: np.random.Generator,
    ignore_index: int = 255,
) -> tuple[np.ndarray, np.ndarray]:
    """A random (ch, cw) window of a normalised image (3, H, W) and its label (H, W).

    A side shorter than the crop is padded first (see ``pad_to``).
    """
    ch, cw = _pair(crop_size)
    image, label = pad_to(image, label, ch, cw, ignore_index)
    h, w = label.shape
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    return image[:, top : top + ch, left : left + cw], label[top : top + ch, left : left + cw]


def _pair(size) -> tuple[int, int]:
    ch, cw = (size, size) if np.isscalar(size) else tuple(size)
    if int(ch) < 1 or int(cw) < 1:
        raise ValueError(f"crop_size must be positive, got {size}")
    return int(ch), int(cw)


class SegmentationTransform:
    """Scale, flip, normalise and crop one (image, label) pair; see the module docstring.

    Args:
        crop_size: int or (height, width); None keeps the whole (scaled) image.
        scale_range: (low, high): the scale factor is drawn uniformly from it; None = no scaling.
        flip: mirror left-right with probability 1/2.
        mean: (3,) RGB mean to subtract.
        ignore_index: the label value for padding.

    ``transform(image uint8 (H, W, 3), label uint8 (H, W), rng)`` returns
    (float32 (3, h, w), int64 (h, w)).
    """

    def __init__(
        self,
        crop_size=None,
        scale_range=None,
        flip: bool = False,
        mean=VGG_MEAN_RGB,
        ignore_index: int = 255,
    ):
        if crop_size is not None:
            _pair(crop_size)
        if scale_range is not None:
            low, high = scale_range
            if not 0 < low <= high:
                raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.flip = flip
        self.mean = np.asarray(mean, dtype=np.float32)
        self.ignore_index = ignore_index

    @property
    def is_random(self) -> bool:
        return self.crop_size is not None or self.scale_range is not None or self.flip

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_pair(image, label)
        if rng is None:
            if self.is_random:
                raise ValueError("this transform is random: pass a numpy.random.Generator")
            rng = np.random.default_rng(0)
        if self.scale_range is not None:
            image, label = rescale(image, label, float(rng.uniform(*self.scale_range)))
        if self.flip and rng.random() < 0.5:
            image, label = hflip(image, label)
        out = normalize(image, self.mean)
        label = label.astype(np.int64)
        if self.crop_size is not None:
            out, label = random_crop(out, label, self.crop_size, rng, self.ignore_index)
        return np.ascontiguousarray(out), np.ascontiguousarray(label)

    def __repr__(self) -> str:
        return (
            f"SegmentationTransform(crop_size={self.crop_size}, "
            f"scale_range={self.scale_range}, flip={self.flip})"
        )
