"""Environment variables are parsed strictly, and the BLAS thread count follows the idle cores."""

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

    def select(self, user_api):
        return self

    def info(self):
        return [{"num_threads": 4}]


def test_adapting_follows_what_other_programs_keep_busy(monkeypatch):
    """Over each interval: the machine's busy seconds minus this process's own."""
    clock = {"wall": 100.0, "busy": 1000.0, "ours": 10.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(threads.time, "process_time", lambda: clock["ours"])
    monkeypatch.setattr(threads, "_busy_seconds", lambda: clock["busy"])
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    t = threads.BlasThreads(interval=2.0, environ={"MINIFCN_THREADS": "auto"})
    t._controller = fake = _FakeLimits()
    t.start()
    assert t.threads == 2 and fake.calls == [(2, "blas")]

    def interval(seconds, ours, others):
        clock["wall"] += seconds
        clock["ours"] += ours
        clock["busy"] += ours + others
        t.adapt()

    interval(2.5, ours=5.0, others=2.4)  # another program kept ~1 core busy
    assert t.threads == 1 and t.others_busy == pytest.approx(2.4 / 2.5)
    interval(1.0, ours=1.0, others=0.0)  # too soon to look again
    assert t.threads == 1
    interval(2.0, ours=2.0, others=0.0)  # 3 s, the other program gone
    assert t.threads == 2 and fake.calls == [(2, "blas"), (1, "blas"), (2, "blas")]


def test_a_fixed_or_inherited_thread_count_is_kept(monkeypatch):
    fixed = threads.BlasThreads(environ={"MINIFCN_THREADS": "3"})
    fixed._controller = fake = _FakeLimits()
    fixed.start()
    fixed._mark = (0.0, 0.0, 0.0)  # as if long ago: adapt would look again if it adapted
    fixed.adapt()
    assert fake.calls == [(3, "blas")] and "fixed by MINIFCN_THREADS" in fixed.describe()
    inherited = threads.BlasThreads(environ={"OPENBLAS_NUM_THREADS": "1"})
    inherited._controller = fake = _FakeLimits()
    inherited.start()
    assert fake.calls == [] and not inherited.adaptive
    assert inherited.threads == 4 and "as set by OPENBLAS_NUM_THREADS=1" in inherited.describe()
    default = threads.BlasThreads(environ={})
    default._controller = fake = _FakeLimits()
    default.start()
    default._mark = (0.0, 0.0, 0.0)
    default.adapt()
    assert fake.calls == [] and not default.adaptive and "the BLAS default" in default.describe()


def test_the_thread_count_can_change_the_last_bits_so_the_default_never_changes_it():
    """OpenBLAS picks other kernels for other thread counts: conv1_1's weight-gradient
    product (64 x 27, summed over ~86k pixels) differs in its last bits between 1 and 2
    threads. That is why the count stays the BLAS's own unless MINIFCN_THREADS says."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    dy = rng.standard_normal((64, 86436), dtype=np.float32)
    col = rng.standard_normal((86436, 27), dtype=np.float32)
    results = []
    for count in (1, 2):
        with threadpool_limits(count, user_api="blas"):
            results.append(dy @ col)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-3)
    assert not threads.BlasThreads(environ={}).adaptive  # unset: the count never moves
