"""Coordinate maps: where a layer's output pixels sit in its input.

A conv or pool with kernel k, stride s and padding p maps an output coordinate to the
centre of its input window, ``x_in = s * x_out + (k - 1) / 2 - p``; a transposed conv is
the inverse of that map; a crop at offset o is ``x_in = x_out + o``; pointwise layers keep
pixels in place. Each layer returns its own map (``Module.coord_map``); composing them
from the image up (``models/geometry.py``) places every blob in the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class CoordMap:
    """image_coordinate = scale * blob_coordinate + shift (exact fractions)."""

    scale: Fraction = Fraction(1)
    shift: Fraction = Fraction(0)

    @classmethod
    def window(cls, kernel: int, stride: int, padding: int) -> CoordMap:
        """A conv's or pool's map: output pixel -> centre of its input window."""
        return cls(Fraction(stride), Fraction(kernel - 1, 2) - padding)

    def inverse(self) -> CoordMap:
        """The map back: x_out = (x_in - shift) / scale."""
        return CoordMap(1 / self.scale, -self.shift / self.scale)

    def then(self, layer_map: CoordMap) -> CoordMap:
        """The map of a blob computed from this one by a layer with ``layer_map``
        (which maps the layer's output coordinates to its input coordinates)."""
        return CoordMap(self.scale * layer_map.scale, self.scale * layer_map.shift + self.shift)

    def __str__(self) -> str:
        sign = "+" if self.shift >= 0 else "-"
        return f"x_img = {_fmt(self.scale)}*x {sign} {_fmt(abs(self.shift))}"


def _fmt(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{float(f):g}"
