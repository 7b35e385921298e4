"""What training, evaluation and prediction share: batches in, scores out, metrics."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from minifcn.backend import as_numpy, to_device
from minifcn.data import iterate_batches
from minifcn.data.transforms import normalize
from minifcn.inference.metrics import SegmentationMetrics
from minifcn.nn import Conv2d, ConvTranspose2d, Crop, Dropout, Fuse, MaxPool2d, ReLU, Scale


def predict_scores(model, images, device: str = "cpu"):
    """images float32 (N, 3, H, W), mean-subtracted -> class scores NumPy (N, C, H, W).

    For a backbone that supports only some input sizes (the mini one), the
    batch is padded (with the mean, i.e. zeros) up to the next supported size
    and the scores are cropped back.
    """
    return as_numpy(_device_scores(model, images, device))


def predict_labels(model, images, device: str = "cpu") -> np.ndarray:
    """images float32 (N, 3, H, W) -> predicted class ids, NumPy int32 (N, H, W).

    The arg-max is taken where the scores are (on the GPU for ``device="gpu"``),
    so only the class ids (4 bytes a pixel) are copied back, not C float scores.
    """
    scores = _device_scores(model, images, device)
    return as_numpy(scores.argmax(axis=1).astype("int32"))


def _device_scores(model, images, device: str):
    """The model's scores for ``images``, left on ``device``, cropped to (N, C, H, W)."""
    n, _, h, w = images.shape
    ph, pw = next_supported_side(model, h), next_supported_side(model, w)
    if (ph, pw) != (h, w):
        padded = np.zeros((n, 3, ph, pw), dtype=images.dtype)
        padded[:, :, :h, :w] = as_numpy(images)
        images = padded
    scores = model(to_device(images, device))
    return scores[:, :, :h, :w]


def next_supported_side(model, side: int) -> int:
    """The smallest side >= ``side`` the model can segment (``side`` itself for the paper
    backbone); the image is padded up to it. ValueError, naming the supported sizes, when
    none is within 64 pixels."""
    for s in range(side, side + 64):
        if model.supports(s):
            return s
    model.blob_sizes(side)  # raises with the explanation
    return side


def evaluate(
    model, dataset, batch_size: int = 1, device: str = "cpu", progress=None, predict=None
) -> dict:
    """Run ``model`` in eval mode over ``dataset``; one confusion matrix for the whole set.

    Returns the dict of ``SegmentationMetrics.compute()`` plus ``"metrics"`` (the
    accumulator, for per-class tables) and ``"pred_counts"`` (pixels predicted
    per class, to spot a collapse onto one class). ``predict(model, images, device)``
    replaces ``predict_labels`` (e.g. ``segment_tiled`` for large images).
    """
    predict = predict or predict_labels
    model.eval()
    metrics = SegmentationMetrics(dataset.num_classes, dataset.ignore_index, dataset.class_names)
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    batches = iterate_batches(dataset, batch_size)
    if progress is not None:
        batches = progress(batches)
    for images, labels in batches:
        pred = predict(model, images, device)
        metrics.update(pred, labels)
        counts += np.bincount(pred.ravel(), minlength=dataset.num_classes)
    result = metrics.compute()
    result["metrics"] = metrics
    result["pred_counts"] = counts
    return result


def collapsed(pred_counts, threshold: float = 0.99) -> bool:
    """True when one class takes at least ``threshold`` of all predicted pixels."""
    total = pred_counts.sum()
    return bool(total > 0 and pred_counts.max() >= threshold * total)


def segment_image(model, image_uint8, device: str = "cpu") -> np.ndarray:
    """uint8 (H, W, 3) RGB image -> predicted class ids int32 (H, W)."""
    model.eval()
    x = normalize(image_uint8)[None]
    return predict_labels(model, x, device)[0]


def batch_to_device(images, labels, num_classes: int, ignore_index: int, device: str = "cpu"):
    """The one place a training batch goes to the device: (images, labels) on ``device``.

    images float32 (N, 3, H, W), labels integer (N, H, W), both NumPy.

    The labels are range-checked here, on the host, before the copy (ValueError
    naming the first bad value), and travel as the smallest integer type that
    holds them: uint8 when every value, ``ignore_index`` included, fits in
    0..255 (VOC, ADE20K and shapes: a quarter of int32's bytes), else int32.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        value = int(labels[bad].ravel()[0])
        raise ValueError(
            f"label value {value} is out of range for {num_classes} classes "
            f"(expected 0..{num_classes - 1} or the ignore label {ignore_index})"
        )
    small = np.uint8 if num_classes <= 256 and 0 <= ignore_index <= 255 else np.int32
    return to_device(images, device), to_device(labels.astype(small, copy=False), device)


# ------------------------------------------------------------- large images
def forward_bytes(model, height: int, width: int, batch: int = 1) -> int:
    """An estimate of the memory (bytes) one eval-mode forward pass takes.

    Every layer keeps its input for backward, so the blobs add up: the sum over
    the network's blobs of N * channels * h * w * 4 bytes, plus the largest
    im2col buffer (C * k * k * out_h * out_w * 4 bytes) of a convolution, doubled
    for the temporaries, so that the estimate errs on the large side.
    """
    sizes_h, sizes_w = model.blob_sizes(height), model.blob_sizes(width)
    channels = {"data": 3}
    total = 3 * height * width
    col = 0
    for out, layer, src, *_ in model.graph():
        module = getattr(model, layer)
        rule = BLOB_CHANNELS.get(type(module))
        if rule is None:
            raise TypeError(
                f"forward_bytes: no channel rule for {layer}'s type {type(module).__name__}"
            )
        channels[out] = rule(module, channels[src])
        total += channels[out] * sizes_h[out] * sizes_w[out]
        if isinstance(module, Conv2d) and module.kernel_size > 1:
            k = module.kernel_size
            col = max(col, module.in_channels * k * k * sizes_h[out] * sizes_w[out])
    return 2 * 4 * batch * (total + col)


def padded_forward_bytes(model, height: int, width: int, batch: int = 1) -> int:
    """``forward_bytes`` at the sizes the image is padded up to (``next_supported_side``)."""
    h, w = next_supported_side(model, height), next_supported_side(model, width)
    return forward_bytes(model, h, w, batch)


def _out_channels(layer, channels_in: int) -> int:
    return layer.out_channels


def _same_channels(layer, channels_in: int) -> int:
    return channels_in


# layer type -> the channels of its output blob, from the layer and its input's channels.
BLOB_CHANNELS = {
    Conv2d: _out_channels,
    ConvTranspose2d: _out_channels,
    MaxPool2d: _same_channels,
    ReLU: _same_channels,
    Dropout: _same_channels,
    Scale: _same_channels,
    Crop: _same_channels,
    Fuse: _same_channels,
}


def context_extent(model) -> tuple[Fraction, Fraction]:
    """(left, right): how far, in image pixels, the inputs of any output score reach
    before and after its own pixel (the same above and below).

    Walked through ``model.graph()`` with the bounds of every blob's input window,
    ``J*j + a <= inputs of pixel j <= J*j + c`` in image pixels: a convolution or
    pool (k, s, p) reads inputs s*j - p .. s*j - p + k - 1; a transposed convolution
    output j is fed by the inputs i with j + p - k + 1 <= s*i <= j + p; a crop shifts
    the window; a fuse takes the union. A receptive field alone does not say this: an
    upsampled score blends coarse cells up to a whole cell away, so its field is not
    centred on its pixel.
    """
    one = Fraction(1)
    bounds = {"data": (one, Fraction(0), Fraction(0))}  # blob -> (J, a, c)
    for out, layer, src, *ref in model.graph():
        m = getattr(model, layer)
        jump, a, c = bounds[src]
        if isinstance(m, (Conv2d, MaxPool2d)):
            k, s, p = m.kernel_size, m.stride, m.padding
            bounds[out] = (jump * s, a - jump * p, c + jump * (k - 1 - p))
        elif isinstance(m, ConvTranspose2d):
            k, s, p = m.kernel_size, m.stride, getattr(m, "padding", 0)
            j_out = jump / s
            bounds[out] = (j_out, a + j_out * (p - k + 1), c + j_out * p)
        elif isinstance(m, Crop):
            o = m.offset[0]
            bounds[out] = (jump, a + jump * o, c + jump * o)
        elif isinstance(m, Fuse):
            _, a2, c2 = bounds[ref[0]]
            bounds[out] = (jump, min(a, a2), max(c, c2))
        else:  # ReLU, Dropout, Scale: pixel by pixel
            bounds[out] = (jump, a, c)
    jump, a, c = bounds[model.graph()[-1][0]]
    if jump != 1:
        raise ValueError(f"{model.name}: the output is not at image resolution (jump {jump})")
    return max(Fraction(0), -a), max(Fraction(0), c)


def receptive_margin(model) -> int:
    """Pixels of context a tile needs on each side so that its scores are the
    whole image's: the farthest any score's inputs reach from its pixel
    (``context_extent``), rounded up to the network's stride (so that tiles
    start on the pooling grid)."""
    step = network_stride(model)
    reach = math.ceil(max(context_extent(model)))
    return -(-reach // step) * step


def network_stride(model) -> int:
    """The coarsest blob's stride in image pixels, from the coordinate maps (32 for
    VGG16-based FCNs)."""
    return int(max(m.scale for m in model.coordinate_maps().values()))


def tile_size_for(model, max_bytes: int, limit: int = 4096, batch: int = 1) -> int:
    """The largest square tile side (a multiple of the network stride) whose forward
    pass over ``batch`` images, with its margins, fits in ``max_bytes``; 0 when not even
    one stride does."""
    step = network_stride(model)
    best = 0
    side = step
    while side <= limit:
        if tile_bytes(model, side, batch) > max_bytes:
            break
        best = side
        side += step
    return best


def tile_bytes(model, tile: int, batch: int = 1) -> int:
    """Memory (``forward_bytes``) of one pass of ``segment_tiled`` with tiles of ``tile``
    pixels (rounded down to the stride, as it does) and their context margins."""
    step = network_stride(model)
    side = max(step, tile // step * step) + 2 * receptive_margin(model)
    return padded_forward_bytes(model, side, side, batch)


def plan_tiles(model, height: int, width: int, max_bytes: int, tile=None, batch: int = 1):
    """How to segment ``batch`` images of ``height`` x ``width`` within ``max_bytes``:
    None for one whole-image pass (it fits, and no ``tile`` is forced), else the tile
    side for ``segment_tiled``. ValueError (its message says what to change) when a
    forced ``tile`` does not fit ``max_bytes`` or not even the smallest tile does."""
    gib = max_bytes / 2**30
    if tile is not None:
        need = tile_bytes(model, tile, batch)
        if need > max_bytes:
            best = tile_size_for(model, max_bytes, batch=batch)
            hint = f"use --tile {best} or less" if best else "raise --max-memory"
            raise ValueError(
                f"--tile {tile} needs about {need / 2**30:.2f} GiB per pass (with its context "
                f"margins), more than --max-memory {gib:g} GiB: {hint}"
            )
        return tile
    if padded_forward_bytes(model, height, width, batch) <= max_bytes:
        return None
    best = tile_size_for(model, max_bytes, batch=batch)
    if best == 0:
        need = tile_bytes(model, network_stride(model), batch) / 2**30
        raise ValueError(
            f"not even a small tile of this {model.name} fits in --max-memory {gib:g} GiB; "
            f"a tile needs about {need:.1f} GiB: raise --max-memory"
        )
    return best


def segment_tiled(model, images, device: str = "cpu", tile: int = 512, predict=None) -> np.ndarray:
    """Like ``predict_labels`` for images float32 (N, 3, H, W), in tiles of ``tile`` px.

    Each tile is run with ``receptive_margin`` pixels of context on every side
    (the image's own pixels where they exist) and only its centre is kept, so
    memory is bounded by the tile size, not the image size. Tiles start at
    multiples of the network stride, so the pooling grid is the whole image's.
    ``predict`` (default ``predict_labels``; ``predict_scores`` gives the scores,
    (N, C, H, W)) is what runs on each tile.
    """
    predict = predict or predict_labels
    n, _, h, w = images.shape
    step = network_stride(model)
    tile = max(step, tile // step * step)
    margin = receptive_margin(model)
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            ya, xa = ya // step * step, xa // step * step
            yb, xb = min(h, y1 + margin), min(w, x1 + margin)
            pred = predict(model, images[:, :, ya:yb, xa:xb], device)
            if out is None:
                out = np.empty((*pred.shape[:-2], h, w), dtype=pred.dtype)
            out[..., y0:y1, x0:x1] = pred[..., y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    return out
