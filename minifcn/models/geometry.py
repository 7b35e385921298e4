"""Coordinate maps: where each score-map pixel sits in the input image.

Every conv or pool layer with kernel k, stride s and padding p maps an output
coordinate to the centre of its input window:

    x_in = s * x_out + (k - 1) / 2 - p.

A transposed conv is the inverse of that map. Each layer knows its own map
(``coord_map()``, written beside the layer in ``minifcn/nn``). Composing the maps of all the
layers between the image and a blob gives an affine map ``image = a * x + b``
for the blob. Two blobs with the same ``a`` line up after cropping the larger
one by offset ``(b_ref - b_big) / a``. That is how FCN's crop offsets (19 for
FCN-32s with the paper's padding of 100) follow from the layers' geometry
instead of being typed in by hand.
"""

from __future__ import annotations

from ..nn.coords import CoordMap


def layer_map(layer) -> CoordMap:
    """The coordinate map of one layer: the layer's own ``coord_map()``. A layer type
    without one raises TypeError rather than being taken for the identity."""
    return layer.coord_map()


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
