"""Which images each rank takes: shards of every global batch, blocks of validation batches.

Training: ``--batch-size B`` is the *global* batch, the same run whatever the number
of ranks N. Each global batch (the same items, in the same order, as one process
draws them) is cut into N contiguous shards, the first ``B mod N`` one image larger.
Augmentation depends only on (seed, epoch, item), so a rank transforms its items
exactly as one process would.

Dropout: each rank draws the mask of the *whole* global batch from the stream all
ranks share (same seed, same draws) and keeps its own rows. The masks are then
the ones a single process draws, the generators stay identical on every rank, and
a checkpoint's one dropout state resumes the run on any number of ranks. The cost
is N times the random numbers on each rank, for the two dropout layers only.

Validation: the validation batches (of the same size as one process uses) are
split into contiguous blocks, one per rank, so every image is scored in the batch
it would be in alone; the confusion matrices are then summed over the ranks, and
the metrics are exactly the single-process ones.
"""

from __future__ import annotations

import numpy as np

from ..data import num_batches
from ..data.loader import stack_items
from ..inference.engine import evaluate
from ..inference.metrics import SegmentationMetrics
from ..nn.dropout import RowsOfBatch
from .launch import DistributedError


def shard_bounds(count: int, rank: int, size: int) -> tuple[int, int]:
    """[lo, hi) of rank ``rank``'s contiguous share of ``count`` items; the first
    ``count % size`` ranks take one more."""
    base, extra = divmod(count, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def check_ranks_fit(batch_size: int, size: int) -> None:
    """DistributedError when there are more ranks than images in a global batch."""
    if size > batch_size:
        raise DistributedError(
            f"{size} ranks but --batch-size {batch_size}: the global batch is split across "
            f"the ranks, so each needs at least one image; use --batch-size {size} or more, "
            f"or fewer ranks"
        )


class Rows:
    """``dataset`` seen through a list of item indices (keeps its class attributes)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[int(self.indices[i])]

    def __getattr__(self, name):  # num_classes, ignore_index, class_names, ...
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class Shard:
    """This rank's part of one global batch.

    ``images``/``labels``: NumPy (n, 3, H, W) / (n, H, W). ``offset``/``total``: where
    the part starts in the global batch and that batch's size. ``weight``: pixels the
    loss counts here. ``count``: images of the global batch trained on here; 0 for a
    stand-in (see ``Sharding.batches``), whose ``weight`` is 0 too.
    """

    def __init__(self, images, labels, offset: int, total: int, weight: int, count: int):
        self.images, self.labels = images, labels
        self.offset, self.total, self.weight, self.count = offset, total, weight, count


class Sharding:
    """This rank's view of the global batches (and of its dropout layers)."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size
        self.offset, self.total = 0, 0  # the current global batch, for the dropout masks

    def batches(self, dataset, batch_size: int, shuffle=False, rng=None, start: int = 0):
        """Yield a ``Shard`` per global batch from ``start`` on, in the order one process
        with ``iterate_batches(dataset, batch_size, shuffle, rng, start=start)`` visits them.

        A rank whose share of a short last batch is empty gets a stand-in: the batch's
        first image with ``weight`` 0. It runs the step like the others (so its dropout
        generators draw what theirs draw) and adds nothing to the average.
        """
        n = len(dataset)
        if shuffle:
            order = (np.random.default_rng() if rng is None else rng).permutation(n)
        else:
            order = np.arange(n)
        for b in range(max(0, int(start)), num_batches(n, batch_size)):
            indices = order[b * batch_size : (b + 1) * batch_size]
            lo, hi = shard_bounds(len(indices), self.rank, self.size)
            self.offset, self.total = (lo, len(indices)) if hi > lo else (0, len(indices))
            mine = indices[lo:hi] if hi > lo else indices[:1]
            images, labels = stack_items(dataset, mine)
            weight = int(np.count_nonzero(labels != dataset.ignore_index)) if hi > lo else 0
            yield Shard(images, labels, self.offset, self.total, weight, hi - lo)

    def install_dropout(self, model) -> None:
        """Make every dropout layer of ``model`` draw global-batch masks (see the module)."""
        for module in model.modules():
            rng = getattr(module, "rng", None)
            if isinstance(rng, np.random.Generator) and hasattr(module, "p"):
                module.rng = GlobalBatchDraws(rng, self)

    def evaluation_rows(self, dataset, batch_size: int) -> Rows:
        """The validation items of this rank's block of whole batches."""
        nb = num_batches(len(dataset), batch_size)
        lo, hi = shard_bounds(nb, self.rank, self.size)
        return Rows(dataset, np.arange(lo * batch_size, min(hi * batch_size, len(dataset))))


class GlobalBatchDraws(RowsOfBatch):
    """A dropout layer's generator on one rank: draws for the global batch, returns this
    rank's rows (``nn.dropout.RowsOfBatch``, with the batch and the rows of the rank's
    current shard). ``bit_generator`` is the shared stream's (what checkpoints save)."""

    def __init__(self, rng: np.random.Generator, sharding: Sharding):
        self.rng, self.sharding = rng, sharding

    @property
    def total(self) -> int:
        return self.sharding.total

    @property
    def offset(self) -> int:
        return self.sharding.offset


def sharded_evaluate(comm, sharding: Sharding, model, dataset, batch_size: int, device: str):
    """``inference.engine.evaluate`` over the ranks: each scores its block of batches,
    the confusion matrices and prediction counts are summed (one allreduce), and the
    result is the single-process one, exactly."""
    part = evaluate(model, sharding.evaluation_rows(dataset, batch_size), batch_size, device)
    k = dataset.num_classes
    counts = np.concatenate([part["metrics"].confusion.ravel(), part["pred_counts"]])
    counts = comm.allreduce_sum(counts.astype(np.int64), "summing the validation counts")
    metrics = SegmentationMetrics(k, dataset.ignore_index, dataset.class_names)
    metrics.confusion = counts[: k * k].reshape(k, k).copy()
    result = metrics.compute()
    result["metrics"] = metrics
    result["pred_counts"] = counts[k * k :].copy()
    return result
