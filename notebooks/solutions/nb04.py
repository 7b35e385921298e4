"""Notebook 04, exercises: crop offsets from coordinate maps, and crop-and-fuse.

``crop_offset`` aligns two blobs' coordinate maps. ``crop_offsets`` composes the
maps of FCN-8s's layers for another padding of conv1_1 (building no model, whose
construction would use the library's own crop_offset). ``crop_fuse_forward`` and
``crop_fuse_backward`` are a skip's crop followed by the sum.
"""

from dataclasses import replace

import numpy as np

from minifcn.models import PAPER
from minifcn.models.geometry import CoordMap, layer_map
from minifcn.models.vgg import vgg16_layers
from minifcn.nn import Conv2d, ConvTranspose2d


def crop_offset(big, ref):
    """The offset at which ``big`` (a CoordMap) must be cropped to line up with ``ref``."""
    if big.scale != ref.scale:
        raise ValueError(f"different strides: {big.scale} and {ref.scale}")
    offset = (ref.shift - big.shift) / big.scale  # big's pixel `offset` sits on ref's pixel 0
    if offset.denominator != 1 or offset < 0:
        raise ValueError(f"no crop aligns them: offset {offset}")
    return int(offset)


def crop_offsets(first_padding):
    """FCN-8s's crop offsets (paper geometry) with conv1_1 padded by ``first_padding``."""
    config = replace(PAPER, widths=(1,) * 5, fc_channels=1, first_padding=first_padding)
    maps = {"data": CoordMap()}
    prev = "data"
    for name, layer in vgg16_layers(config, np.random.default_rng(0)):
        maps[name] = maps[prev].then(layer_map(layer))
        prev = name
    one_by_one = layer_map(Conv2d(1, 1, 1))  # score_fr, score_pool4, score_pool3: identity
    maps["score_fr"] = maps[prev].then(one_by_one)
    maps["upscore2"] = maps["score_fr"].then(layer_map(ConvTranspose2d(1, 1, 4, 2)))
    maps["score_pool4"] = maps["pool4"].then(one_by_one)
    pool4c = crop_offset(maps["score_pool4"], maps["upscore2"])
    # after the crop and the sum, fuse_pool4 has upscore2's map
    maps["upscore_pool4"] = maps["upscore2"].then(layer_map(ConvTranspose2d(1, 1, 4, 2)))
    maps["score_pool3"] = maps["pool3"].then(one_by_one)
    pool3c = crop_offset(maps["score_pool3"], maps["upscore_pool4"])
    maps["upscore8"] = maps["upscore_pool4"].then(layer_map(ConvTranspose2d(1, 1, 16, 8)))
    final = crop_offset(maps["upscore8"], maps["data"])
    return {"score_pool4c": pool4c, "score_pool3c": pool3c, "score": final}


def crop_fuse_forward(a, b, offset):
    """a (N, C, h, w) + b (N, C, H, W) cut to (h, w) starting at offset = (row, column)."""
    oy, ox = offset
    h, w = a.shape[2:]
    return a + b[:, :, oy : oy + h, ox : ox + w]


def crop_fuse_backward(dy, b_shape, offset):
    """dy (N, C, h, w) -> (da, db): the sum passes dy to both; the crop puts b's share
    back into its window and leaves zeros where b was cut away."""
    oy, ox = offset
    h, w = dy.shape[2:]
    db = np.zeros(b_shape, dtype=dy.dtype)
    db[:, :, oy : oy + h, ox : ox + w] = dy
    return dy.copy(), db
