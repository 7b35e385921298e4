"""Crop: align a larger score map with a smaller reference by cutting at an offset."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace
from typing import NamedTuple

from ..backend import get_array_module
from ..dispatch import ops_for
from .checks import check_nchw
from .coords import CoordMap
from .module import Module


def crop2d(x, oy: int, ox: int, h: int, w: int):
    """x (N, C, H, W) -> its window (N, C, h, w) whose top-left corner is (oy, ox)."""
    return x[:, :, oy : oy + h, ox : ox + w]


def crop2d_backward(dy, x_shape, oy: int, ox: int):
    """dy (N, C, h, w) -> dx (N, C, H, W): dy inside the window, zeros elsewhere."""
    xp = get_array_module(dy)
    dx = xp.zeros(x_shape, dtype=dy.dtype)
    dx[:, :, oy : oy + dy.shape[2], ox : ox + dy.shape[3]] = dy
    return dx


# The plain functions of a Crop (minifcn.dispatch lets the course plug in its own).
PLAIN = SimpleNamespace(crop2d=crop2d, crop2d_backward=crop2d_backward)


class CropCache(NamedTuple):
    ops: object  # the functions that ran forward
    x_shape: tuple  # (N, C, H, W) of the input


class Crop(Module):
    """Cut ``x`` to the spatial size of ``ref``, starting at ``offset`` = (y, x).

    FCN's upsampled score maps are slightly larger than the map they are fused
    with (or than the image); the offset, computed from the layers' geometry,
    says where they line up.

    ``forward(x (N, C, H, W), ref (N', C', h, w)) -> (N, C, h, w)``;
    ``backward(dy (N, C, h, w)) -> dx (N, C, H, W)``: dy in the cropped window,
    zeros elsewhere. ``ref`` only provides a size and gets no gradient.
    """

    def __init__(self, offset):
        self.offset = (offset, offset) if isinstance(offset, int) else tuple(offset)
        self._cache = None

    def forward(self, x, ref):
        check_nchw(x, "Crop")
        h, w = ref.shape[-2:]
        oy, ox = self.offset
        if oy < 0 or ox < 0 or oy + h > x.shape[2] or ox + w > x.shape[3]:
            raise ValueError(
                f"Crop: cannot cut {h}x{w} at offset {self.offset} from an input of spatial size "
                f"{x.shape[2]}x{x.shape[3]}"
            )
        ops = ops_for(x, PLAIN)
        self._cache = CropCache(ops, tuple(x.shape))
        return ops.crop2d(x, oy, ox, h, w)

    def backward(self, dy):
        ops, x_shape = self.cached()
        return ops.crop2d_backward(dy, x_shape, *self.offset)

    def coord_map(self) -> CoordMap:
        """Output pixel y -> input pixel y + offset (one offset for both axes)."""
        oy, ox = self.offset
        if oy != ox:
            raise ValueError(f"Crop: offset {self.offset} differs between the axes; a "
                             "coordinate map holds one offset for both")  # fmt: skip
        return CoordMap(shift=Fraction(oy))

    def extra_repr(self) -> str:
        return f"offset={self.offset}"
