"""Mini-batches: stack dataset items into (N, 3, H, W) images and (N, H, W) labels."""

from __future__ import annotations

import math

import numpy as np

from .files import DataError


def num_batches(dataset, batch_size: int, drop_last: bool = False) -> int:
    """How many batches ``iterate_batches`` yields for ``dataset`` (or a length)."""
    n = dataset if isinstance(dataset, int) else len(dataset)
    _check_batch_size(batch_size)
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def _check_batch_size(batch_size: int) -> None:
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")


def iterate_batches(
    dataset,
    batch_size: int,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
    drop_last: bool = False,
    start: int = 0,
):
    """Yield (images float32 (N, 3, H, W), labels int64 (N, H, W)) NumPy batches.

    Args:
        dataset: anything with ``len`` and ``dataset[i] -> (image (3, H, W), label (H, W))``.
        batch_size: N; the last batch is smaller unless ``drop_last``.
        shuffle: visit the items in a random order, drawn from ``rng`` (a fresh,
            unseeded generator when ``rng`` is None: pass one for reproducibility).
        drop_last: skip a final incomplete batch.
        start: the first batch to yield; earlier ones are skipped without reading
            their items (the order is the same as with ``start=0``).

    All items of a batch must have the same size; a ValueError says which
    differ (use the dataset's ``crop_size`` or ``batch_size=1``).
    """
    _check_batch_size(batch_size)
    n = len(dataset)
    if shuffle:
        order = (np.random.default_rng() if rng is None else rng).permutation(n)
    else:
        order = np.arange(n)
    for b in range(max(0, int(start)), num_batches(n, batch_size, drop_last)):
        yield stack_items(dataset, order[b * batch_size : (b + 1) * batch_size])


def stack_items(dataset, indices):
    """The items ``indices`` of ``dataset`` as one batch: images (B, 3, H, W) float32 and
    labels (B, H, W) int64; DataError when their sizes differ."""
    items = [dataset[int(i)] for i in indices]
    shapes = {tuple(image.shape) for image, _ in items}
    if len(shapes) > 1:
        raise DataError(
            f"items {[int(i) for i in indices]} have different sizes {sorted(shapes)} and "
            "cannot be stacked into one batch: set the dataset's crop_size or use batch_size=1"
        )
    images = np.stack([image for image, _ in items]).astype(np.float32, copy=False)
    labels = np.stack([label for _, label in items]).astype(np.int64, copy=False)
    return images, labels
