"""Coordinate maps: where each score-map pixel sits in the input image.

Every conv or pool layer with kernel k, stride s and padding p maps an output
coordinate to the centre of its input window:

    x_in = s * x_out + (k - 1) / 2 - p.

A transposed conv is the inverse of that map. Composing the maps of all the
layers between the image and a blob gives an affine map ``image = a * x + b``
for the blob. Two blobs with the same ``a`` line up after cropping the larger
one by offset ``(b_ref - b_big) / a``. That is how FCN's crop offsets (19 for
FCN-32s with the paper's padding of 100) follow from the layers' geometry
instead of being typed in by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..nn import Conv2d, ConvTranspose2d, MaxPool2d


@dataclass(frozen=True)
class CoordMap:
    """image_coordinate = scale * blob_coordinate + shift (exact fractions)."""

    scale: Fraction = Fraction(1)
    shift: Fraction = Fraction(0)

    def then(self, layer_map: CoordMap) -> CoordMap:
        """The map of a blob computed from this one by a layer with ``layer_map``
        (which maps the layer's output coordinates to its input coordinates)."""
        return CoordMap(self.scale * layer_map.scale, self.scale * layer_map.shift + self.shift)

    def __str__(self) -> str:
        sign = "+" if self.shift >= 0 else "-"
        return f"x_img = {_fmt(self.scale)}*x {sign} {_fmt(abs(self.shift))}"


def _fmt(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{float(f):g}"


def layer_map(layer) -> CoordMap:
    """The coordinate map of one layer (identity for layers that do not move pixels)."""
    if isinstance(layer, (Conv2d, MaxPool2d)):
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        return CoordMap(Fraction(s), Fraction(k - 1, 2) - p)
    if isinstance(layer, ConvTranspose2d):
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        # Inverse of x_in = s * x_out + (k-1)/2 - p.
        return CoordMap(Fraction(1, s), -(Fraction(k - 1, 2) - p) / s)
    return CoordMap()


def crop_offset(big: CoordMap, ref: CoordMap, name: str = "crop") -> int:
    """The offset at which ``big`` must be cropped to line up with ``ref``."""
    if big.scale != ref.scale:
        raise ValueError(f"{name}: blobs have different strides ({big.scale} vs {ref.scale})")
    offset = (ref.shift - big.shift) / big.scale
    if offset.denominator != 1:
        raise ValueError(f"{name}: the blobs do not align on whole pixels (offset {offset})")
    if offset < 0:
        raise ValueError(
            f"{name}: the map to crop starts {-offset} pixels after the one it must cover, so "
            "no crop can align them (for the final crop, more padding in conv1_1 moves it "
            "back; for a skip crop, the head's kernels must change)"
        )
    return int(offset)
