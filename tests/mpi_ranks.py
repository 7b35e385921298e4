"""Checks that need several processes, one per rank.

    mpiexec -n 2 python tests/mpi_ranks.py CHECK [ARG...]

``tests/test_distributed.py`` starts each check under ``mpiexec`` and reads the
exit status and the lines every rank printed. A check fails with a traceback
(exit status 1) on the rank whose assertion failed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/support

from minifcn import backend  # noqa: E402
from minifcn.data import iterate_batches  # noqa: E402
from minifcn.distributed import (  # noqa: E402
    CollectiveTimeout,
    Sharding,
    from_environment,
    launched,
    sharded_evaluate,
)
from minifcn.inference.engine import batch_to_device, evaluate  # noqa: E402
from minifcn.models import FCN8s  # noqa: E402
from minifcn.nn import SoftmaxCrossEntropy  # noqa: E402
from minifcn.optim import SGD  # noqa: E402

CLASSES, SIZE = 5, 32


class Toy:
    """A small in-memory dataset: images, labels with a share of "ignore" pixels
    that differs from image to image (so shards count different pixel numbers)."""

    num_classes = CLASSES
    ignore_index = 255
    class_names = tuple(f"c{i}" for i in range(CLASSES))

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.images = rng.standard_normal((n, 3, SIZE, SIZE), dtype=np.float32)
        self.labels = rng.integers(0, CLASSES, (n, SIZE, SIZE))
        for i in range(n):  # image i has rows 0 .. 3i ignored
            self.labels[i, : 3 * i] = 255

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def use_device(device: str, comm) -> None:
    if device == "gpu" and not backend.gpu_available():
        from support import fake_cupy

        backend._cupy = fake_cupy.module
    if device == "gpu":
        backend.use_gpu(comm.local_rank)


def train(model, steps, device, comm=None, sharding=None, weight_of=None):
    """SGD with momentum and weight decay over ``steps`` global batches of 3."""
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss_fn = SoftmaxCrossEntropy()
    data, losses = Toy(3 * steps, seed=7), []
    if sharding is None:
        batches = ((x, y, None) for x, y in iterate_batches(data, 3))
    else:
        batches = ((s.images, s.labels, s) for s in sharding.batches(data, 3))
    for images, labels, shard in batches:
        x, y = batch_to_device(images, labels, CLASSES, 255, device)
        loss = loss_fn(model(x), y)
        model.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        if comm is not None:
            weight = shard.weight if weight_of is None else weight_of(shard)
            loss = comm.allreduce_grads(model, loss, weight)
        losses.append(loss)
        opt.step()
    return losses


def max_relative_gap(a, b) -> float:
    gap = 0.0
    for pa, pb in zip(a.parameters(), b.parameters()):
        x, y = backend.as_numpy(pa.data), backend.as_numpy(pb.data)
        gap = max(gap, float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12)))
    return gap


def check_same_weights_as_one_process(device: str = "cpu") -> None:
    """Two ranks (shards of 2 and 1 images) against one process with the batch of 3,
    dropout on: after 3 steps the weights agree to float32 round-off on both ranks;
    averaging the ranks' means without the pixel weights is visibly off."""
    comm = from_environment()
    assert comm.size == 2, comm.size
    use_device(device, comm)
    sharding = Sharding(comm.rank, comm.size)
    ranks = FCN8s(CLASSES, config="mini", rng=0).to(device)
    sharding.install_dropout(ranks)
    losses = train(ranks, 3, device, comm, sharding)
    comm.check_in_sync(ranks)

    alone = FCN8s(CLASSES, config="mini", rng=0).to(device)
    alone_losses = train(alone, 3, device)
    gap = max_relative_gap(ranks, alone)
    np.testing.assert_allclose(losses, alone_losses, rtol=1e-5)
    assert gap < 2e-5, f"rank {comm.rank}: weights differ from one process by {gap:.2e}"

    naive = FCN8s(CLASSES, config="mini", rng=0).to(device)
    naive_sharding = Sharding(comm.rank, comm.size)
    naive_sharding.install_dropout(naive)
    train(naive, 3, device, comm, naive_sharding, weight_of=lambda s: 1.0)
    naive_gap = max_relative_gap(naive, alone)
    assert naive_gap > 50 * gap, f"plain mean of means: {naive_gap:.2e}, weighted {gap:.2e}"
    if device == "gpu" and not backend.gpu_available():
        from support import fake_cupy

        reduces = [c for c in fake_cupy.nccl.calls if c[0] == "allReduce"]
        assert len(reduces) == 6, reduces  # one per step, two runs of three steps
        flat = sum(p.data.size for p in ranks.parameters()) + 2
        assert {count for _, count in reduces} == {flat}, (reduces, flat)
    print(f"rank {comm.rank}: same weights as one process (gap {gap:.1e}, naive {naive_gap:.1e})")
    comm.close()


def check_sharded_validation_is_exact() -> None:
    """Seven validation images in batches of 2 over two ranks: the summed confusion
    matrix and every metric equal one process's exactly."""
    comm = from_environment()
    model = FCN8s(CLASSES, config="mini", rng=3)
    data = Toy(7, seed=11)
    got = sharded_evaluate(comm, Sharding(comm.rank, comm.size), model, data, 2, "cpu")
    want = evaluate(model, data, batch_size=2)
    np.testing.assert_array_equal(got["metrics"].confusion, want["metrics"].confusion)
    np.testing.assert_array_equal(got["pred_counts"], want["pred_counts"])
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu"):
        assert got[key] == want[key], (key, got[key], want[key])
    mine = len(Sharding(comm.rank, comm.size).evaluation_rows(data, 2))
    print(f"rank {comm.rank}: scored {mine} of 7 images; metrics equal one process's")
    comm.close()


def check_a_silent_rank_times_out() -> None:
    """Rank 1 stays away from a collective longer than the limit: rank 0 stops with
    the timeout line, rank 1 with rank 0's reason at its next collective."""
    with launched([]) as comm:
        if comm.rank == 1:
            time.sleep(float(sys.argv[2]))
        t = time.monotonic()
        try:
            comm.allreduce_sum(np.ones(4), "a test sum")
        except CollectiveTimeout:
            print(f"rank {comm.rank}: gave up after {time.monotonic() - t:.1f} s", flush=True)
            raise


def check_a_failing_rank_stops_the_others() -> None:
    """Rank 1 stops with an error before a collective: rank 0, waiting in it, stops
    at once with rank 1's reason, long before the timeout."""
    with launched([]) as comm:
        t = time.monotonic()
        if comm.rank == 1:
            raise SystemExit("error: the data of rank 1 is broken")
        try:
            comm.allreduce_sum(np.ones(4), "a test sum")
        finally:
            print(f"rank {comm.rank}: waited {time.monotonic() - t:.1f} s", flush=True)


def check_ranks_compare_arguments() -> None:
    """Started with the arguments after the check name, which differ between ranks."""
    with launched(sys.argv[2:]) as comm:
        print(f"rank {comm.rank}: started", flush=True)


def train_and_fail_at_step(step: str, *argv: str, how: str = "error") -> None:
    """``python -m minifcn.train ARGV`` on this rank, whose data fails at step ``step``
    (``how="sigterm"``: which gets SIGTERM there, as from a scheduler); started beside
    plain ranks with mpiexec's ``:``."""
    import os
    import signal

    from minifcn.commands import train as command
    from minifcn.data import DataError
    from minifcn.optim import SGD, Adam

    calls = [0]

    def step_or_fail(self):
        calls[0] += 1
        if calls[0] == int(step) and how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        elif calls[0] == int(step):
            raise DataError("cannot read image 17 (a test failure on this rank)")
        original[type(self)](self)

    original = {Adam: Adam.step, SGD: SGD.step}
    Adam.step = SGD.step = step_or_fail
    command.main(list(argv))


CHECKS = {
    "same-weights": check_same_weights_as_one_process,
    "validation": check_sharded_validation_is_exact,
    "timeout": check_a_silent_rank_times_out,
    "alarm": check_a_failing_rank_stops_the_others,
    "arguments": check_ranks_compare_arguments,
    "train-fail-at": train_and_fail_at_step,
    "train-term-at": lambda step, *argv: train_and_fail_at_step(step, *argv, how="sigterm"),
}

if __name__ == "__main__":
    name = sys.argv[1]
    if name in ("same-weights", "train-fail-at", "train-term-at"):
        CHECKS[name](*sys.argv[2:])
    else:
        CHECKS[name]()
