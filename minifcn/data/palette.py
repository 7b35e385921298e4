"""Colours for class ids: label maps as RGB pictures, and labels drawn over images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..backend import as_numpy

IGNORE_COLOUR = (255, 255, 255)  # void / ignore pixels are drawn white


def make_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: uint8 (n, 3), class id -> RGB.

    The bits of the class id are dealt out in turn to red, green and blue, from
    the most significant bit of each channel down, so neighbouring ids get very
    different colours: 0 black, 1 dark red, 2 dark green, 3 olive, ...
    """
    ids = np.arange(n, dtype=np.int64)
    rgb = np.zeros((n, 3), dtype=np.int64)
    rest = ids.copy()
    for bit in range(8):
        for channel in range(3):
            rgb[:, channel] |= ((rest >> channel) & 1) << (7 - bit)
        rest >>= 3
    return rgb.astype(np.uint8)


PALETTE = make_palette()


def colorize(label, ignore_index: int = 255, palette: np.ndarray | None = None) -> np.ndarray:
    """Class-id map (H, W) -> uint8 RGB (H, W, 3); ``ignore_index`` pixels are white."""
    label = np.asarray(as_numpy(label))
    if label.ndim != 2:
        raise ValueError(f"expected a label map of shape (H, W), got {label.shape}")
    palette = PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    ignore = label == ignore_index
    ids = np.where(ignore, 0, label).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(palette)):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise ValueError(f"label value {bad} has no colour in a palette of {len(palette)}")
    out = palette[ids]
    out[ignore] = IGNORE_COLOUR
    return out


def overlay(image, label, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """Blend ``colorize(label)`` over an RGB image uint8 (H, W, 3) -> uint8 (H, W, 3).

    ``alpha`` is the weight of the label colours (0 = image only, 1 = labels only).
    """
    image = np.asarray(as_numpy(image))
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    colours = colorize(label, ignore_index)
    if colours.shape[:2] != image.shape[:2]:
        raise ValueError(f"label shape {colours.shape[:2]} != image shape {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def mask_image(label, ignore_index: int = 255):
    """A class-id map (H, W) as a palette PNG image: the pixel values are the class ids
    (what the folder dataset reads back), shown in the PASCAL VOC colours, the ignore
    value in white. More than 256 ids do not fit a palette: then an RGB picture."""
    label = np.asarray(as_numpy(label))
    if label.size and (label.min() < 0 or label.max() > 255):
        return Image.fromarray(colorize(label, ignore_index))
    palette = PALETTE.copy()
    if 0 <= ignore_index <= 255:
        palette[ignore_index] = IGNORE_COLOUR
    im = Image.fromarray(label.astype(np.uint8))  # mode "L"; putpalette makes it "P"
    im.putpalette(palette.ravel().tolist())
    return im
