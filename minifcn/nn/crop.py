"""Crop: align a larger score map with a smaller reference by cutting at an offset."""

from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module
from .checks import check_nchw
from .module import Module


class CropCache(NamedTuple):
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
        self._cache = CropCache(tuple(x.shape))
        return x[:, :, oy : oy + h, ox : ox + w]

    def backward(self, dy):
        xp = get_array_module(dy)
        dx = xp.zeros(self.saved().x_shape, dtype=dy.dtype)
        oy, ox = self.offset
        dx[:, :, oy : oy + dy.shape[2], ox : ox + dy.shape[3]] = dy
        return dx

    def extra_repr(self) -> str:
        return f"offset={self.offset}"
