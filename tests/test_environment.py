"""Environment variables are parsed strictly; the CPU thread count follows the idle cores
and never changes a result."""

import os
import subprocess
import sys

import numpy as np
import pytest

from minifcn import backend
from minifcn.accel import threads
from minifcn.backend import BadEnvironment, env_switch, environment_problem, requested_threads
from minifcn.models import FCN8s


# ------------------------------------------------------------------ strict switches
@pytest.mark.parametrize("name", ["MINIFCN_ACCEL", "MINIFCN_CUDA_KERNELS", "CUPY_TF32"])
@pytest.mark.parametrize("value", ["false", "off", "2", "yes", "0.0", "1 1"])
def test_a_switch_with_a_value_it_does_not_know_is_an_error_naming_the_accepted_values(name, value):
    with pytest.raises(BadEnvironment) as err:
        env_switch(name, {name: value})
    message = str(err.value)
    assert name in message and repr(value) in message and "use 1 or 0" in message
    assert "\n" not in message


def test_switches_read_0_and_1_and_fall_back_to_their_default_when_unset_or_empty():
    assert env_switch("MINIFCN_ACCEL", {}) is True
    assert env_switch("MINIFCN_ACCEL", {"MINIFCN_ACCEL": " 0 "}) is False
    assert env_switch("MINIFCN_CUDA_KERNELS", {"MINIFCN_CUDA_KERNELS": ""}) is True
    assert env_switch("CUPY_TF32", {}) is False  # CuPy's own default: full float32
    assert env_switch("CUPY_TF32", {"CUPY_TF32": "1"}) is True


def test_minifcn_accel_false_no_longer_silently_keeps_the_accelerated_path(monkeypatch):
    monkeypatch.setenv("MINIFCN_ACCEL", "false")
    with pytest.raises(BadEnvironment, match="MINIFCN_ACCEL='false'"):
        backend.accelerated()
    with pytest.raises(BadEnvironment):
        FCN8s(3, "mini")(np.zeros((1, 3, 32, 32), np.float32))


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "1025", "99999999999999999999"])
def test_a_thread_count_that_is_not_1_to_1024_or_auto_is_refused(value):
    with pytest.raises(BadEnvironment, match="MINIFCN_THREADS=.*1..1024, or auto"):
        requested_threads({"MINIFCN_THREADS": value})


def test_thread_counts_and_auto_are_understood():
    assert requested_threads({}) is None and requested_threads({"MINIFCN_THREADS": " "}) is None
    assert requested_threads({"MINIFCN_THREADS": "AUTO"}) == "auto"
    assert requested_threads({"MINIFCN_THREADS": " 3 "}) == 3
    assert environment_problem({"MINIFCN_THREADS": "2", "MINIFCN_ACCEL": "1"}) is None
    assert "CUPY_TF32" in environment_problem({"CUPY_TF32": "true"})


@pytest.mark.parametrize(
    "command,env",
    [
        ("minifcn.train", {"MINIFCN_ACCEL": "false"}),
        ("minifcn.bench", {"MINIFCN_THREADS": "0"}),
        ("minifcn.evaluate", {"MINIFCN_CUDA_KERNELS": "no"}),
        ("minifcn.gpucheck", {"CUPY_TF32": "on"}),
    ],
)
def test_commands_stop_with_one_line_on_a_bad_variable(command, env, tmp_path):
    import os

    full = {**os.environ, **env, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [sys.executable, "-m", command, "--help"], env=full, capture_output=True, text=True,
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: environment variable ")
    assert next(iter(env)) in lines[0]
    assert not list(tmp_path.iterdir())  # nothing created


# ------------------------------------------------------------------ BLAS threads
@pytest.mark.parametrize(
    "others,cores,expected", [(0.0, 2, 2), (0.9, 2, 1), (1.2, 2, 1), (2.6, 2, 1), (1.4, 8, 7)]
)
def test_the_thread_count_is_the_idle_cores_at_least_one(others, cores, expected):
    assert threads.idle_cores(others, cores) == expected


class _FakeLimits:
    def __init__(self):
        self.calls = []

    def limit(self, limits, user_api):
        self.calls.append((limits, user_api))


def test_the_count_follows_what_other_programs_keep_busy_and_the_blas_runs_alone(monkeypatch):
    """Over each interval: the machine's busy seconds minus this process's own."""
    clock = {"wall": 100.0, "busy": 1000.0, "ours": 10.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(threads.time, "process_time", lambda: clock["ours"])
    monkeypatch.setattr(threads, "_busy_seconds", lambda: clock["busy"])
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    for environ in ({}, {"MINIFCN_THREADS": "auto"}):  # unset is auto
        t = threads.CpuThreads(interval=2.0, environ=environ)
        t._controller = fake = _FakeLimits()
        t.start()
        assert t.threads == 2 and fake.calls == [(1, "blas")]  # every core until it looked

        def interval(t, seconds, ours, others):
            clock["wall"] += seconds
            clock["ours"] += ours
            clock["busy"] += ours + others
            t.adapt()

        interval(t, 2.5, ours=5.0, others=2.4)  # another program kept ~1 core busy
        assert t.threads == 1 and t.others_busy == pytest.approx(2.4 / 2.5)
        interval(t, 1.0, ours=1.0, others=0.0)  # too soon to look again
        assert t.threads == 1
        interval(t, 2.0, ours=2.0, others=0.0)  # 3 s, the other program gone
        assert t.threads == 2 and fake.calls == [(1, "blas")]  # the BLAS stays at one
        assert "as many as are idle" in t.describe()
        # the batch split's helper (accel.split) busy a core: this program's, not another's
        t.helper_cpu += 2.5
        interval(t, 2.5, ours=2.5, others=2.5)
        assert t.threads == 2 and t.others_busy == pytest.approx(0.0)
        interval(t, 2.5, ours=2.5, others=2.5)  # the same, no helper: another program
        assert t.threads == 1


def test_the_busy_time_leaves_out_the_hosts_steal(tmp_path):
    """Steal is the host running other machines on this one's cores: no program here that
    the pool's threads would wait on, so it does not shrink the pool."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 7 50 1000 20 5 3 400 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    tick = os.sysconf("SC_CLK_TCK")
    assert threads._busy_seconds(str(stat)) == pytest.approx((100 + 7 + 50 + 5 + 3) / tick)
    assert threads.stolen_seconds(str(stat)) == pytest.approx(400 / tick)
    for bad in ("", "intr 1 2 3\n", "cpu 1 2 3\n"):
        stat.write_text(bad)
        assert (
            threads._busy_seconds(str(stat)) is None and threads.stolen_seconds(str(stat)) is None
        )
    assert threads._busy_seconds(str(tmp_path / "missing")) is None


def test_a_fixed_or_inherited_thread_count_is_kept(monkeypatch):
    monkeypatch.setattr(threads, "_busy_seconds", lambda: 0.0)
    fixed = threads.CpuThreads(environ={"MINIFCN_THREADS": "3"})
    inherited = threads.CpuThreads(environ={"OPENBLAS_NUM_THREADS": "1"})
    for t, count, said in [(fixed, 3, "fixed by MINIFCN_THREADS"), (inherited, 1, "=1")]:
        t._controller = fake = _FakeLimits()
        t.start()
        t._mark = (0.0, -1e9, 0.0)  # as if long ago, and the machine busy: adapting would drop
        t.adapt()
        assert t.threads == count and not t.adaptive and fake.calls == [(1, "blas")]
        assert said in t.describe()


def _gradients(count: int, monkeypatch) -> list:
    """Every parameter's gradient in the second SGD step of a small FCN-8s (in the first
    the zero-initialised score layers pass the backbone no gradient), and the loss, on
    ``count`` pool threads."""
    from minifcn.nn import SoftmaxCrossEntropy
    from minifcn.optim import SGD

    fixed = threads.CpuThreads(environ={"MINIFCN_THREADS": str(count)}).start()
    monkeypatch.setattr(threads, "_PROCESS", fixed)
    model = FCN8s(5, config="mini", rng=0)
    opt, loss_fn = SGD(model.parameters(), lr=0.1, momentum=0.9), SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 40, 40)).astype(np.float32)
    labels = rng.integers(0, 5, (4, 40, 40)).astype(np.uint8)
    for _ in range(2):
        opt.zero_grad()
        loss = loss_fn(model(x), labels)
        model.backward(loss_fn.backward(), input_grad=False)
        grads = [p.grad.copy() for p in model.parameters() if p.requires_grad]
        opt.step()
    return grads + [np.asarray(loss)]


def test_a_training_step_gives_the_same_bits_on_one_thread_or_three(monkeypatch):
    """The pieces are fixed by the shapes and each runs the BLAS alone, so the thread
    count (which follows the load) never changes a result, nor a --resume."""
    from minifcn.accel import workers

    monkeypatch.setattr(workers, "PARALLEL_WORK", 0)  # every piece on the pool, however small
    one = _gradients(1, monkeypatch)
    three = _gradients(3, monkeypatch)
    assert workers.workers().threads == 3
    assert len(one) == len(three) > 30
    assert all(np.any(g != 0) for g in one[:26])  # the backbone's too
    for a, b in zip(one, three):  # the gradients (float32), then the loss
        assert np.array_equal(a, b)
    assert all(g.dtype == np.float32 for g in one[:-1])


def test_the_pool_runs_every_piece_once_and_raises_the_first_error():
    from minifcn.accel.workers import Workers

    pool = Workers(3)
    try:
        seen = []
        pool.run(seen.append, 50)
        assert sorted(seen) == list(range(50))

        def nested(i):  # a piece that starts pieces runs them itself, in its thread
            inner = []
            pool.run(inner.append, 4)
            seen.append((i, inner))

        seen.clear()
        pool.run(nested, 6)
        assert sorted(seen) == [(i, [0, 1, 2, 3]) for i in range(6)]

        def fails(i):
            if i == 3:
                raise ValueError("piece 3")

        with pytest.raises(ValueError, match="piece 3"):
            pool.run(fails, 1000)
        seen.clear()
        pool.run(seen.append, 5)  # still usable
        assert sorted(seen) == list(range(5))
    finally:
        pool.close()
    with pytest.raises(ValueError, match="at least 1 thread"):
        Workers(0)


def test_a_second_caller_runs_its_own_pieces_while_the_pool_is_busy():
    import threading

    from minifcn.accel.workers import Workers

    pool = Workers(2)
    started, release = threading.Event(), threading.Event()
    mine = []
    try:

        def slow(i):  # holds the pool's job until the other caller has run
            started.set()
            release.wait(10)

        first = threading.Thread(target=pool.run, args=(slow, 2))
        first.start()
        assert started.wait(10)
        pool.run(lambda i: mine.append((i, threading.get_ident())), 3)
        assert first.is_alive()  # it did not wait for the first job
        release.set()
        first.join(10)
        assert mine == [(i, threading.get_ident()) for i in range(3)]  # in order, in this thread
        pool.run(mine.append, 2)  # the pool is free again
        assert mine[-2:] in ([0, 1], [1, 0])
    finally:
        release.set()
        pool.close()


def test_pieces_too_small_to_share_run_in_the_calling_thread(monkeypatch):
    import threading

    from minifcn.accel import workers

    monkeypatch.setattr(workers, "workers", lambda: workers.Workers(3))
    seen = []
    workers.run(lambda i: seen.append(threading.get_ident()), 8, work=workers.PARALLEL_WORK - 1)
    assert seen == [threading.get_ident()] * 8
