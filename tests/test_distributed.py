"""Data-parallel training (minifcn.distributed): sharding, the flat gradient buffer, the
launcher's environment, and, under ``mpiexec -n 2``, the same weights as one process,
exact sharded validation, and every rank stopping with one line instead of hanging."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minifcn.data import iterate_batches
from minifcn.distributed import (
    DistributedError,
    FlatGradients,
    GlobalBatchDraws,
    Sharding,
    SingleProcess,
    check_ranks_fit,
    code_digest,
    collective_timeout,
    fingerprint,
    placement,
    shard_bounds,
)
from minifcn.models.checkpoint import load_checkpoint, load_run_checkpoint
from minifcn.nn import Parameter
from minifcn.training.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
RANKS = Path(__file__).resolve().parent / "mpi_ranks.py"


class Items:
    """n tiny items; labels hold item i's number, with i rows "ignored"."""

    num_classes, ignore_index, class_names = 3, 255, ("a", "b", "c")

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        label = np.full((4, 4), i % 3, dtype=np.int64)
        label[: i % 4] = 255
        return np.full((3, 4, 4), float(i), dtype=np.float32), label


# ------------------------------------------------------------------- sharding
def test_shards_cover_the_batch_in_order_and_differ_by_at_most_one():
    for count in range(0, 12):
        for size in range(1, 5):
            bounds = [shard_bounds(count, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_one_rank_gets_the_batches_iterate_batches_gives():
    data = Items(11)
    mine = Sharding(0, 1).batches(data, 4, shuffle=True, rng=np.random.default_rng(5), start=1)
    theirs = iterate_batches(data, 4, shuffle=True, rng=np.random.default_rng(5), start=1)
    for shard, (images, labels) in zip(mine, theirs, strict=True):
        np.testing.assert_array_equal(shard.images, images)
        np.testing.assert_array_equal(shard.labels, labels)
        assert shard.images.dtype == images.dtype and shard.labels.dtype == labels.dtype
        assert (shard.offset, shard.total, shard.count) == (0, len(images), len(images))
        assert shard.weight == np.count_nonzero(labels != 255)


def test_the_ranks_shards_put_together_are_the_global_batch():
    data, size = Items(10), 3  # batches of 4, 4, 2: the last leaves rank 2 without images
    per_rank = [
        list(Sharding(r, size).batches(data, 4, shuffle=True, rng=np.random.default_rng(1)))
        for r in range(size)
    ]
    whole = list(iterate_batches(data, 4, shuffle=True, rng=np.random.default_rng(1)))
    for b, (images, _) in enumerate(whole):
        shards = [per_rank[r][b] for r in range(size)]
        real = [s for s in shards if s.count]
        np.testing.assert_array_equal(np.concatenate([s.images for s in real]), images)
        assert [s.offset for s in real] == sorted(s.offset for s in real)
        assert sum(s.count for s in shards) == len(images)
    stand_in = per_rank[2][2]
    assert (stand_in.count, stand_in.weight, len(stand_in.images)) == (0, 0, 1)


def test_each_rank_draws_its_rows_of_the_single_process_dropout_mask():
    shape = (5, 2, 3, 3)  # a global batch of 5 over 2 ranks: rows 0-2 and 3-4
    want = np.random.default_rng(9).random(shape, dtype=np.float32)
    got = []
    for rank in range(2):
        sharding = Sharding(rank, 2)
        sharding.offset, sharding.total = shard_bounds(5, rank, 2)[0], 5
        lo, hi = shard_bounds(5, rank, 2)
        draws = GlobalBatchDraws(np.random.default_rng(9), sharding)
        got.append(draws.random((hi - lo, *shape[1:]), dtype=np.float32))
        # the shared stream moved on by the whole batch on every rank
        assert draws.bit_generator.state == _advanced(9, shape)
    np.testing.assert_array_equal(np.concatenate(got), want)


def _advanced(seed, shape):
    rng = np.random.default_rng(seed)
    rng.random(shape, dtype=np.float32)
    return rng.bit_generator.state


def test_validation_blocks_are_whole_batches_that_cover_the_set():
    data = Items(11)
    rows = [Sharding(r, 3).evaluation_rows(data, 2).indices for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(rows), np.arange(11))
    assert all(len(r) % 2 == 0 for r in rows[:-1]) and all(r[0] % 2 == 0 for r in rows if len(r))


def test_more_ranks_than_images_in_a_batch_is_refused_saying_what_to_do():
    check_ranks_fit(4, 4)
    with pytest.raises(DistributedError, match=r"5 ranks but --batch-size 4.*--batch-size 5"):
        check_ranks_fit(4, 5)


# --------------------------------------------------------------- flat buffer
def test_the_flat_buffer_gives_the_mean_over_every_pixel_of_the_global_batch(xp):
    """Two ranks' means over 30 and 10 pixels: the pixel-weighted sum of their buffers
    is the mean over all 40, as one process computes it; a frozen parameter is left out."""
    rng = np.random.default_rng(0)
    per_pixel = rng.standard_normal((40, 6))  # each pixel's gradient of 6 numbers
    frozen = Parameter(xp.asarray(np.ones(2, np.float32)), requires_grad=False)
    ranks = []
    for rows in (slice(0, 30), slice(30, 40)):
        grad = per_pixel[rows].mean(axis=0).astype(np.float32)
        p = Parameter(xp.asarray(np.zeros(6, np.float32)))
        p.grad[...] = xp.asarray(grad)
        flat = FlatGradients([p, frozen])
        flat.pack(loss=float(grad.sum()), weight=rows.stop - rows.start)
        ranks.append((p, flat))
    total = ranks[0][1].buffer + ranks[1][1].buffer  # what the allreduce computes
    for p, flat in ranks:
        flat.buffer[...] = total
        loss, weight = flat.unpack()
        assert weight == 40 and flat.count == 6
        np.testing.assert_allclose(_host(p.grad), per_pixel.mean(axis=0), rtol=1e-5)
        assert loss == pytest.approx(per_pixel.mean(axis=0).sum(), rel=1e-5)


def test_with_the_summed_loss_the_ranks_gradients_and_losses_add_up():
    """The paper's recipe sums the loss over pixels: so do the ranks (a stand-in adds 0)."""
    grads, flats = (np.float32([1.0, 2.0]), np.float32([10.0, 20.0]), np.float32([5.0, 5.0])), []
    for k, (g, weight) in enumerate(zip(grads, (7, 3, 0))):
        p = Parameter(np.zeros(2, np.float32))
        p.grad[...] = g
        flats.append((p, FlatGradients([p])))
        flats[-1][1].pack(loss=float(k + 1), weight=1.0 if weight else 0.0, summed=True)
    total = sum(f.buffer for _, f in flats)
    for p, flat in flats:
        flat.buffer[...] = total
        loss, _ = flat.unpack()
        np.testing.assert_array_equal(p.grad, [11.0, 22.0])
        assert loss == 3.0


def test_the_docs_example_of_the_pixel_weighted_mean_runs():
    """docs/distributed.md: the weighted mean of the shards' means is the global mean and
    the plain mean of the means is not (the block ends in asserts)."""
    text = (ROOT / "docs" / "distributed.md").read_text()
    blocks = [b.split("```")[0] for b in text.split("```python\n")[1:]]
    (example,) = [b for b in blocks if "allreduced =" in b]
    exec(compile(example, "docs/distributed.md", "exec"), {})


def test_a_rank_with_nothing_to_count_adds_zeros_whatever_its_gradients_hold():
    p = Parameter(np.zeros(3, np.float32))
    p.grad[...] = np.nan
    flat = FlatGradients([p])
    flat.pack(loss=float("nan"), weight=0)
    np.testing.assert_array_equal(flat.buffer, 0)


def _host(a):
    from minifcn.backend import as_numpy

    return as_numpy(a)


# ------------------------------------------------------------- the launcher
@pytest.mark.parametrize(
    "env, want",
    [
        ({}, (1, 0, 0)),
        ({"PMI_SIZE": "4", "PMI_RANK": "2", "MPI_LOCALRANKID": "0"}, (4, 2, 0)),
        ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}, (2, 1, 1)),
        ({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}, (1, 0, 0)),  # a batch script's process
    ],
)
def test_rank_and_size_come_from_the_launchers_variables(env, want):
    place = placement(env)
    assert (place.size, place.rank, place.local_rank) == want


def test_nonsense_from_the_launcher_is_refused():
    with pytest.raises(DistributedError, match="rank 3 of 2"):
        placement({"PMI_SIZE": "2", "PMI_RANK": "3"})
    with pytest.raises(DistributedError, match="not integers"):
        placement({"PMI_SIZE": "two"})
    with pytest.raises(DistributedError, match="MINIFCN_DIST_TIMEOUT"):
        collective_timeout({"MINIFCN_DIST_TIMEOUT": "-1"})
    assert collective_timeout({"MINIFCN_DIST_TIMEOUT": "2.5"}) == 2.5


def test_one_process_communicator_changes_nothing():
    comm = SingleProcess()
    a = np.arange(3)
    assert comm.allreduce_sum(a) is a and comm.allreduce_grads(None, 0.25, 7) == 0.25
    assert comm.broadcast_object({"x": 1}) == {"x": 1} and comm.is_root
    with pytest.raises(DistributedError, match="broken"):
        comm.agree("broken")


def test_the_fingerprint_changes_with_the_arguments_and_with_the_code(tmp_path):
    assert fingerprint(["--lr", "1"]) != fingerprint(["--lr", "2"])
    assert fingerprint(["--lr", "1"])["code"] == fingerprint([])["code"]
    (tmp_path / "a.py").write_text("x = 1\n")
    before = code_digest.__wrapped__(tmp_path)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_digest.__wrapped__(tmp_path) != before


# ------------------------------------------------------------ under mpiexec
def _mpi_ready() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    if _mpiexec() is None:
        return "no mpiexec next to python or on PATH"
    return None


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


_NOT_READY = _mpi_ready()
if _NOT_READY and os.environ.get("MINIFCN_REQUIRE_MPI") == "1":
    raise RuntimeError(f"MINIFCN_REQUIRE_MPI=1 but {_NOT_READY}")
needs_mpi = pytest.mark.skipif(_NOT_READY is not None, reason=_NOT_READY or "")


def mpiexec(*parts, ranks=2, env=None, timeout=240):
    """Run ``mpiexec -n ranks python PARTS`` (or an MPMD line given as lists)."""
    cmd = [_mpiexec()]
    programs = parts if parts and isinstance(parts[0], list) else [list(parts)]
    for k, program in enumerate(programs):
        if k:
            cmd.append(":")
        cmd += ["-n", str(ranks if len(programs) == 1 else 1), sys.executable, *program]
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MPLBACKEND": "Agg",
        "OPENBLAS_NUM_THREADS": "1",
        **(env or {}),
    }
    t = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT
    )
    proc.seconds = time.monotonic() - t
    # mpiexec forwards every rank's output as it comes; a line may still carry another's
    proc.lines = re.sub(r"(?<!^)(?<!\n)(\[rank \d+/\d+\] )", r"\n\1", proc.stdout + proc.stderr)
    proc.lines = proc.lines.splitlines()
    return proc


def rank_lines(proc, rank: int) -> list[str]:
    return [line for line in proc.lines if line.startswith(f"[rank {rank}/2] ")]


@needs_mpi
def test_two_ranks_end_with_the_weights_of_one_process_with_the_whole_batch():
    proc = mpiexec(str(RANKS), "same-weights", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("same weights as one process") == 2


@needs_mpi
def test_two_ranks_on_the_device_average_with_one_nccl_allreduce_per_step():
    proc = mpiexec(str(RANKS), "same-weights", "gpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("same weights as one process") == 2


@needs_mpi
def test_sharded_validation_gives_exactly_the_single_process_metrics():
    proc = mpiexec(str(RANKS), "validation")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("metrics equal one process's") == 2


@needs_mpi
def test_a_rank_that_stays_away_makes_every_rank_stop_with_one_line():
    proc = mpiexec(str(RANKS), "timeout", "3", env={"MINIFCN_DIST_TIMEOUT": "2"})
    assert proc.returncode != 0
    (line0,) = rank_lines(proc, 0)
    assert "no answer from every rank within 2 s while a test sum" in line0
    (line1,) = rank_lines(proc, 1)
    assert "rank 0 stopped: rank 0: no answer" in line1
    assert proc.seconds < 30


@needs_mpi
def test_a_rank_that_fails_stops_the_others_at_once_with_its_reason():
    proc = mpiexec(str(RANKS), "alarm", env={"MINIFCN_DIST_TIMEOUT": "120"})
    assert proc.returncode != 0
    assert rank_lines(proc, 1) == ["[rank 1/2] error: the data of rank 1 is broken"]
    assert rank_lines(proc, 0) == ["[rank 0/2] error: rank 1 stopped: the data of rank 1 is broken"]
    assert proc.seconds < 60  # far below the 120 s timeout


@needs_mpi
def test_ranks_started_with_different_arguments_refuse_to_start():
    proc = mpiexec([str(RANKS), "arguments", "--lr", "1"], [str(RANKS), "arguments", "--lr", "2"])
    assert proc.returncode != 0
    for rank in (0, 1):
        (line,) = rank_lines(proc, rank)
        assert "started with different arguments: rank 1 differs from rank 0" in line
    assert not any("started" == line.split(": ")[-1] for line in proc.lines)


@needs_mpi
def test_mpiexec_without_mpi4py_says_so_on_every_rank(tmp_path):
    (tmp_path / "mpi4py.py").write_text("raise ImportError('No module named mpi4py')\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    proc = mpiexec("-m", "minifcn.train", "--out", str(tmp_path / "run"), env=env)
    assert proc.returncode != 0
    for rank in (0, 1):
        (line,) = rank_lines(proc, rank)
        assert f"started as rank {rank} of 2" in line and "mpi4py is not installed" in line
        assert 'pip install -e ".[mpi]"' in line
    assert not (tmp_path / "run").exists()


TINY = ["--train-size", "8", "--val-size", "4", "--no-progress", "--grid", "2"]


def _train(out, *extra, ranks=2, env=None):
    return mpiexec("-m", "minifcn.train", "--out", str(out), *TINY, *extra, ranks=ranks, env=env)


def _history(out):
    return json.loads((Path(out) / "metrics.json").read_text())


@needs_mpi
def test_a_two_rank_run_stopped_and_resumed_in_one_process_matches_a_one_process_run(tmp_path):
    """Two ranks (global batch 3: shards of 2 and 1) until rank 1 fails early in epoch 2,
    the rest resumed in one process: the same history and, to float32 round-off, the
    same weights as one process that trained both epochs. (SGD: Adam's m / sqrt(v)
    turns the round-off of near-zero gradients into whole steps of lr.)"""
    two, one = tmp_path / "two", tmp_path / "one"
    run = [*TINY, "--batch-size", "3", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.01"]
    args = ["--out", str(two), *run]
    both = mpiexec(["-m", "minifcn.train", *args], [str(RANKS), "train-fail-at", "4", *args])
    assert both.returncode != 0
    assert sum(line.startswith("epoch 1/2") for line in both.lines) == 1  # rank 0 reports
    (line0,) = rank_lines(both, 0)
    assert "saved" in line0 and "at epoch 2, step 1" in line0, line0
    resumed = _train(two, "--resume", ranks=1)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    alone = mpiexec("-m", "minifcn.train", "--out", str(one), *run, ranks=1)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    for a, b in zip(_history(two), _history(one), strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        for key in ("pixel_accuracy", "mean_iu"):
            assert a[key] == pytest.approx(b[key], abs=1e-3)
    w2, w1 = (load_checkpoint(d / "last.npz")[0] for d in (two, one))
    for name, value in w1.items():
        gap = np.abs(w2[name] - value).max() / max(np.abs(value).max(), 1e-12)
        assert gap < 1e-4, (name, gap)
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()}


@needs_mpi
def test_a_rank_failing_mid_run_stops_every_rank_and_rank_0_saves_like_ctrl_c(tmp_path):
    out = tmp_path / "run"
    args = ["-m", "minifcn.train", "--out", str(out), *TINY, "--batch-size", "2"]
    proc = mpiexec(args, [str(RANKS), "train-fail-at", "3", "--out", str(out), *TINY,
                          "--batch-size", "2"])  # fmt: skip
    assert proc.returncode != 0
    (line1,) = rank_lines(proc, 1)
    assert line1 == "[rank 1/2] error: cannot read image 17 (a test failure on this rank)"
    (line0,) = rank_lines(proc, 0)
    assert line0.startswith("[rank 0/2] error: rank 1 stopped: cannot read image 17")
    assert f"saved {out / 'last.npz'} at epoch 1, step 3" in line0
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ["last.npz"]
    state = load_run_checkpoint(out / "last.npz")[1]["state"]
    assert (state["epoch"], state["step_in_epoch"]) == (0, 3)
    resumed = _train(out, "--resume", "--epochs", "1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr


@needs_mpi
def test_sigterm_on_one_rank_stops_every_rank_and_rank_0_saves(tmp_path):
    out = tmp_path / "run"
    args = ["--out", str(out), *TINY, "--batch-size", "2"]
    proc = mpiexec(["-m", "minifcn.train", *args], [str(RANKS), "train-term-at", "2", *args])
    assert proc.returncode != 0
    assert any(line.strip() == "stopped by SIGTERM" for line in proc.lines)  # rank 1
    (line0,) = rank_lines(proc, 0)
    assert line0.startswith("[rank 0/2] error: rank 1 stopped: SIGTERM.")
    assert f"saved {out / 'last.npz'} at epoch 1, step" in line0
    assert load_run_checkpoint(out / "last.npz")[1]["state"]["step_in_epoch"] >= 1


@needs_mpi
def test_the_run_lock_stops_every_rank_of_a_second_job(tmp_path):
    with RunFolder.open(tmp_path / "run"):  # another training holds the folder
        proc = _train(tmp_path / "run", "--batch-size", "2")
    assert proc.returncode != 0
    (line0,) = rank_lines(proc, 0)
    assert "in use by another training run" in line0
    (line1,) = rank_lines(proc, 1)
    assert line1.startswith("[rank 1/2] error: rank 0 stopped: run folder") and "in use" in line1


@needs_mpi
def test_more_ranks_than_the_batch_stops_every_rank_before_training(tmp_path):
    proc = _train(tmp_path / "run", "--batch-size", "1")
    assert proc.returncode != 0
    for rank in (0, 1):
        (line,) = rank_lines(proc, rank)
        assert "2 ranks but --batch-size 1" in line
    assert not (tmp_path / "run").exists()


def test_a_ranks_exit_status_is_named_for_the_other_ranks():
    from minifcn.distributed.job import stop_reason

    assert stop_reason(130) == "interrupted (Ctrl-C)"
    assert stop_reason(143) == "SIGTERM" and stop_reason(129) == "SIGHUP"
    assert stop_reason(1) == "exit status 1" and stop_reason(255) == "exit status 255"
