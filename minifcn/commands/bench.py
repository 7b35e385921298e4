"""Benchmark the layers at the shapes FCN uses: ``python -m minifcn.bench``.

For each layer it measures the forward and the backward time (the median over
``--rounds`` rounds of the median of at least ``--repeat`` runs, warm, see
``timeit``; on the GPU after a synchronize; with ``--compare torch`` the rounds
alternate with PyTorch's, so that a slow spell of a shared machine falls on both)
and the arithmetic rate in GFLOP/s, compared with the machine's float32 matrix
multiply, the ceiling for a convolution written as im2col + one matrix product.
It also times one training step of the mini FCN-8s (forward, loss, backward, SGD),
in rounds as the layers, and reports its peak memory.

Every figure is for the accelerated path (``minifcn.accel``, the default); the
"plain ms" column and the "plain path" line time the same layers and step on
the plain path of ``minifcn/nn/`` (``MINIFCN_ACCEL=0``), so that what the
optimisations buy is visible (``--no-plain`` skips them).

``--compare torch`` times the same operations in PyTorch (same shapes, dtype,
thread count) and prints minifcn's time over PyTorch's. PyTorch is not a
dependency of minifcn; it is imported only here, only when asked for.

On the GPU every figure is taken twice, at equal precision for both libraries:
with TF32 off for both (CuPy's strict float32 products, PyTorch's
``allow_tf32 = False`` for cuBLAS and cuDNN) and with TF32 on for both
(``CUPY_TF32=1``, ``allow_tf32 = True``); ``--tf32 off`` or ``--tf32 on`` keeps
one. Times on the GPU come from CUDA events recorded around each run. The JSON
keeps each precision's tables under ``precision_runs``, and the device
operations one training step launches where the CuPy in use counts them (the
test suite's stand-in does; real CuPy does not).

``--under-load`` measures how the default training step (mini FCN-8s on shapes,
batch 2, 96x96, Adam, default settings) slows down when it shares the machine:
idle, beside one busy process, and beside a second copy of itself, for minifcn
and, with ``--compare torch``, PyTorch; each measured in a fresh process.

``--scaling`` measures what the threads buy: the same step at one thread and at
every core, one convolution alone, in two threads and in two processes, one
copy made in more and more calls, and the convolution beside a long copy and beside
many short ones (``minifcn.commands.scaling`` says why).

Examples::

    python -m minifcn.bench                      # CPU, full sizes
    python -m minifcn.bench --quick              # tiny sizes: a smoke test
    python -m minifcn.bench --compare torch --json bench.json
    python -m minifcn.bench --device gpu
    python -m minifcn.bench --under-load --compare torch --json load.json
    python -m minifcn.bench --scaling --compare torch --json scaling.json
    OPENBLAS_NUM_THREADS=1 python -m minifcn.bench --compare torch --cpu-time   # shared CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import NamedTuple

import numpy as np

from minifcn import backend
from minifcn.accel.cpu import keep_freed_memory
from minifcn.accel.threads import adapt_threads, stolen_seconds
from minifcn.commands import scaling
from minifcn.commands.args import bounded_int
from minifcn.export.torch_fcn import torch_fcn
from minifcn.nn import Conv2d, ConvTranspose2d, MaxPool2d, SoftmaxCrossEntropy
from minifcn.training.step import TrainStep

NUM_CLASSES = 21


# ------------------------------------------------------------------ the cases
def layer_cases(quick: bool) -> list:
    """The layers to time, as dicts: name, kind, input shape and layer arguments.

    conv: (in, out, kernel, stride, padding); convT: (channels, kernel, stride);
    pool: (kernel, stride, ceil); loss: classes in the shape.
    """
    if quick:
        n = 1
        return [
            dict(name="conv3x3", kind="conv", x=(n, 4, 8, 8), args=(4, 4, 3, 1, 1)),
            dict(name="conv1_1 p=3", kind="conv", x=(1, 3, 6, 6), args=(3, 4, 3, 1, 3)),
            dict(name="score 1x1", kind="conv", x=(n, 8, 4, 4), args=(8, 3, 1, 1, 0)),
            dict(name="upscore 4/2", kind="convT", x=(n, 3, 3, 3), args=(3, 4, 2)),
            dict(name="upscore 16/8", kind="convT", x=(n, 3, 2, 2), args=(3, 16, 8)),
            dict(name="maxpool 2/2 ceil", kind="pool", x=(n, 4, 7, 7), args=(2, 2, True)),
            dict(name="softmax x-ent", kind="loss", x=(n, 3, 8, 8), args=()),
        ]
    n, c = 8, NUM_CLASSES
    return [
        dict(name="conv3x3 64", kind="conv", x=(n, 64, 64, 64), args=(64, 64, 3, 1, 1)),
        dict(name="conv3x3 128", kind="conv", x=(n, 128, 32, 32), args=(128, 128, 3, 1, 1)),
        dict(name="conv3x3 256", kind="conv", x=(n, 256, 16, 16), args=(256, 256, 3, 1, 1)),
        dict(name="conv3x3 512", kind="conv", x=(n, 512, 8, 8), args=(512, 512, 3, 1, 1)),
        dict(name="conv1_1 p=100", kind="conv", x=(1, 3, 64, 64), args=(3, 64, 3, 1, 100)),
        dict(name="score_fr 1x1", kind="conv", x=(n, 4096, 8, 8), args=(4096, c, 1, 1, 0)),
        dict(name="score_pool 1x1", kind="conv", x=(n, 512, 32, 32), args=(512, c, 1, 1, 0)),
        dict(name="upscore2 4/2", kind="convT", x=(n, c, 8, 8), args=(c, 4, 2)),
        dict(name="upscore8 16/8", kind="convT", x=(n, c, 18, 18), args=(c, 16, 8)),
        dict(name="upscore 64/32", kind="convT", x=(n, c, 4, 4), args=(c, 64, 32)),
        dict(name="maxpool 2/2 ceil", kind="pool", x=(n, 64, 65, 65), args=(2, 2, True)),
        dict(name="softmax x-ent", kind="loss", x=(n, c, 64, 64), args=()),
    ]


def flops(case: dict, out_shape) -> tuple[float, float]:
    """(forward, backward) floating-point operations; (0, 0) when not a product."""
    if case["kind"] == "conv":
        cin, cout, k = case["args"][:3]
        fwd = 2.0 * out_shape[0] * cout * cin * k * k * out_shape[2] * out_shape[3]
        return fwd, 2 * fwd  # backward: input gradient + weight gradient
    if case["kind"] == "convT":
        n, c, h, w = case["x"]
        k = case["args"][1]
        fwd = 2.0 * n * c * c * k * k * h * w  # each input pixel paints a k x k x C stamp
        return fwd, 2 * fwd
    return 0.0, 0.0


# ------------------------------------------------------------------- timing
CLOCK = {"now": time.perf_counter}  # --cpu-time swaps in time.process_time
# A pause before each figure: the threads the last timed library left spinning
# (OpenBLAS's and PyTorch's OpenMP threads keep a core busy a while after their work)
# then sleep, instead of slowing the next library's figure. --quick runs without it.
SETTLE = {"seconds": 0.25}
WARM_UP = {"seconds": 0.1}  # then runs, untimed, for this long (see timeit); --quick: none
SPAN = {"seconds": 0.1}  # the timed runs of a figure last at least this long; --quick: 0
MOST_RUNS = 1000  # and number at most this many
# Rounds of each figure, minifcn's and PyTorch's alternating, the median taken. A slow spell
# of a shared machine that slows the median of one library's rounds covers more than half of
# them; with 5, that is 3 rounds, and the other library's 2 rounds between them too, so its
# median is slowed as well. With 3, a spell over two of one library's rounds covers only
# one of the other's, and decides the ratio alone.
ROUNDS = 5


class CupyEvents:
    """CUDA events from CuPy: ``pair()`` gives (start, end), ``seconds`` their distance."""

    def __init__(self, cp):
        self.cp = cp

    def pair(self):
        return self.cp.cuda.Event(), self.cp.cuda.Event()

    def seconds(self, start, end) -> float:
        end.synchronize()
        return self.cp.cuda.get_elapsed_time(start, end) / 1e3


class TorchEvents(CupyEvents):
    """The same with ``torch.cuda.Event``."""

    def __init__(self, torch):
        self.torch = torch

    def pair(self):
        make = self.torch.cuda.Event
        return make(enable_timing=True), make(enable_timing=True)

    def seconds(self, start, end) -> float:
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def timeit(fn, repeat: int, sync=None, events=None, before=None) -> float:
    """Median seconds of ``fn()`` over at least ``repeat`` runs, after a pause (``SETTLE``)
    and warm-up runs for ``WARM_UP`` seconds (at least one).

    The first calls after an idle spell run slower (cold caches, a core the system
    let sleep), the more so the shorter the call; a training step runs its layers back
    to back, so the figures are taken warm, for both libraries alike.

    The timed runs are as many as fill ``SPAN`` seconds at the warm-up's pace (at most
    ``MOST_RUNS``), ``repeat`` where that is more: five runs of a 2 ms call sample 10 ms
    of a machine whose speed swings over tens of milliseconds, and one slow spell would
    be most of them.

    With ``events`` (``CupyEvents`` / ``TorchEvents``, on the GPU) each run is timed
    by CUDA events recorded around it on the stream: the device's own clock.

    ``before``, if given, is called untimed before every run (the loss's forward before
    each timed backward: one backward a forward, as training calls it)."""
    now = CLOCK["now"]
    prepare = before or (lambda: None)
    time.sleep(SETTLE["seconds"])
    started = time.perf_counter()
    until, calls = started + WARM_UP["seconds"], 0
    while True:
        prepare()
        fn()
        if sync:
            sync()
        calls += 1
        if time.perf_counter() >= until:
            break
    pace = (time.perf_counter() - started) / calls
    times = []
    for _ in range(timed_runs(repeat, pace)):
        prepare()
        if sync:
            sync()
        if events is not None:
            start, end = events.pair()
            start.record()
            fn()
            end.record()
            times.append(events.seconds(start, end))
            continue
        start = now()
        fn()
        if sync:
            sync()
        times.append(now() - start)
    return statistics.median(times)


def timed_runs(repeat: int, pace: float) -> int:
    """How many runs ``timeit`` times: ``repeat``, or as many as fill ``SPAN`` seconds at
    ``pace`` seconds a run where that is more (at most ``MOST_RUNS``)."""
    if pace <= 0:
        return repeat
    return max(repeat, min(MOST_RUNS, math.ceil(SPAN["seconds"] / pace)))


def _events(device: str):
    return CupyEvents(backend.cupy_module()) if device == "gpu" else None


def matmul_gflops(xp, m: int, k: int, n: int, repeat: int, sync=None) -> float:
    """GFLOP/s of a float32 (m, k) @ (k, n) matrix product (on the CPU, with the BLAS on as
    many threads as minifcn's pool has: the machine's ceiling, not one piece's)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((m, k), dtype=np.float32))
    b = xp.asarray(rng.standard_normal((k, n), dtype=np.float32))
    with threadpool_limits(cpu_threads() if xp is np else None, user_api="blas"):
        return 2.0 * m * k * n / timeit(lambda: a @ b, repeat, sync) / 1e9


def gemm_shape(case: dict) -> tuple[int, int, int] | None:
    """(m, k, n) of the forward matrix product of a convolution case."""
    if case["kind"] != "conv":
        return None
    n, cin, h, w = case["x"]
    _, cout, k, s, p = case["args"]
    out_h, out_w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return cout, cin * k * k, n * out_h * out_w


# ------------------------------------------------------------ our layers
def build_layer(case: dict):
    kind, a = case["kind"], case["args"]
    if kind == "conv":
        return Conv2d(a[0], a[1], a[2], a[3], a[4], rng=0)
    if kind == "convT":
        return ConvTranspose2d(a[0], a[0], a[1], a[2])
    if kind == "pool":
        return MaxPool2d(a[0], a[1], ceil_mode=a[2])
    return SoftmaxCrossEntropy()


def case_inputs(case: dict):
    """NumPy float32 input (and int labels for the loss), fixed seed."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case["x"], dtype=np.float32)
    if case["kind"] != "loss":
        return x, None
    n, c, h, w = case["x"]
    labels = rng.integers(0, c, (n, h, w))
    labels[:, :2] = 255  # some ignored pixels, as VOC's borders
    return x, labels


def time_ours(case: dict, device: str, repeat: int) -> dict:
    xp = backend.cupy_module() if device == "gpu" else np
    sync = (lambda: backend.synchronize(xp)) if device == "gpu" else None
    layer = build_layer(case)
    if case["kind"] != "loss":
        layer.to(device)
    x, labels = case_inputs(case)
    x = xp.asarray(x)
    ev = _events(device)
    if case["kind"] == "loss":
        labels = xp.asarray(labels)
        fwd = timeit(lambda: layer(x, labels), repeat, sync, ev)
        bwd = timeit(layer.backward, repeat, sync, ev, before=lambda: layer(x, labels))
        return dict(fwd_s=fwd, bwd_s=bwd, out_shape=x.shape)
    y = layer(x)
    dy = xp.asarray(np.random.default_rng(1).standard_normal(y.shape, dtype=np.float32))
    fwd = timeit(lambda: layer(x), repeat, sync, ev)
    layer(x)
    bwd = timeit(lambda: layer.backward(dy), repeat, sync, ev)
    return dict(fwd_s=fwd, bwd_s=bwd, out_shape=tuple(y.shape))


# ------------------------------------------------------------------ PyTorch
def cpu_threads() -> int:
    """The threads minifcn's CPU layers run on now (``minifcn.accel.threads``): PyTorch
    gets as many."""
    return adapt_threads().threads


@contextlib.contextmanager
def plain_timing():
    """The plain path, with NumPy's BLAS on as many threads as minifcn's pool: the plain
    layers have no pieces, so their only threads are the BLAS's (the accelerated path
    pins it to one)."""
    from threadpoolctl import threadpool_limits

    with backend.plain_path(), threadpool_limits(cpu_threads(), user_api="blas"):
        yield


def set_torch_tf32(torch, enabled: bool) -> dict:
    """PyTorch's TF32 switches for cuBLAS products and cuDNN convolutions; what was set."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return dict(
        matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
        cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
    )


def import_torch():
    """``torch`` with as many threads as minifcn runs on, or None (with a printed note)."""
    try:
        import torch
    except Exception as err:  # not installed, or broken
        print(f"--compare torch: cannot import torch ({err}); skipping the comparison.")
        return None
    torch.set_num_threads(cpu_threads())
    return torch


def _torch_device(torch, device: str):
    if device == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("--compare torch on the GPU needs a CUDA build of PyTorch")
        return "cuda", torch.cuda.synchronize
    return "cpu", None


def time_torch(torch, case: dict, device: str, repeat: int) -> dict:
    """The same operation in torch.nn.functional: forward, then backward (autograd)."""
    import torch.nn.functional as F

    dev, sync = _torch_device(torch, device)
    ev = TorchEvents(torch) if device == "gpu" else None
    x_np, labels_np = case_inputs(case)
    x = torch.tensor(x_np, device=dev, requires_grad=True)
    kind, a = case["kind"], case["args"]
    inputs = [x]
    if kind == "conv":
        w = torch.randn(a[1], a[0], a[2], a[2], device=dev, requires_grad=True)
        b = torch.zeros(a[1], device=dev, requires_grad=True)
        inputs += [w, b]

        def f():
            return F.conv2d(x, w, b, stride=a[3], padding=a[4])
    elif kind == "convT":
        w = torch.randn(a[0], a[0], a[1], a[1], device=dev, requires_grad=True)
        inputs.append(w)

        def f():
            return F.conv_transpose2d(x, w, stride=a[2])
    elif kind == "pool":

        def f():
            return F.max_pool2d(x, a[0], a[1], ceil_mode=a[2])
    else:
        labels = torch.tensor(labels_np, device=dev)

        def f():
            return F.cross_entropy(x, labels, ignore_index=255)

    fwd = timeit(f, repeat, sync, ev)
    y = f()
    if kind == "loss":  # one backward a forward, as minifcn's loss is timed
        graph = {}
        one = torch.ones_like(y)
        bwd = timeit(
            lambda: torch.autograd.grad(graph["y"], inputs, one),
            repeat, sync, ev, before=lambda: graph.update(y=f()),
        )  # fmt: skip
        return dict(fwd_s=fwd, bwd_s=bwd)
    dy = torch.randn_like(y)
    grad = lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True)  # noqa: E731
    bwd = timeit(grad, repeat, sync, ev)
    return dict(fwd_s=fwd, bwd_s=bwd)


# --------------------------------------------------------- the training step
def _load_fcn8s():
    try:
        from minifcn.models import FCN8s
    except ImportError as err:
        print(f"mini FCN-8s train step: skipped, minifcn.models.FCN8s is not available ({err})")
        return None
    return FCN8s


class StepTimer(NamedTuple):
    """The mini FCN-8s training step, built: ``time(repeat)`` times it (seconds, see
    ``timeit``), ``finish(seconds)`` measures its memory and launches, closes it and
    returns its figures."""

    time: object
    finish: object
    model: object


def train_step_ours(device: str, batch: int, size: int) -> StepTimer | None:
    """Forward + loss + backward + SGD on the mini FCN-8s, as the training loop runs it
    (``TrainStep``); None where the model is not available."""
    FCN8s = _load_fcn8s()
    if FCN8s is None:
        return None
    from minifcn.optim import SGD

    xp = backend.cupy_module() if device == "gpu" else np
    sync = (lambda: backend.synchronize(xp)) if device == "gpu" else None
    model = FCN8s(NUM_CLASSES, config="mini").to(device)
    opt = SGD(model.parameters(), lr=1e-3, momentum=0.9)
    forward_backward = TrainStep(model, SoftmaxCrossEntropy())  # what the training loop runs
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((batch, 3, size, size), dtype=np.float32))
    labels = xp.asarray(rng.integers(0, NUM_CLASSES, (batch, size, size)).astype(np.uint8))

    def step():
        opt.zero_grad()  # one fill of the packed gradients on the GPU
        forward_backward(x, labels)  # as PyTorch: x needs no gradient
        opt.step()

    def finish(seconds: float) -> dict:
        """Images/s, launches, peak memory; the step's helper process is closed."""
        result = dict(batch=batch, size=size, step_s=seconds, images_per_s=batch / seconds)
        result["launches_per_step"], result["launches_note"] = count_launches(step, xp)
        if device == "gpu":
            pool = xp.get_default_memory_pool()
            result["peak_bytes"] = int(pool.total_bytes())
            result["peak_note"] = "CuPy memory pool: bytes held after the steps"
        else:
            tracemalloc.start()
            step()
            result["peak_bytes"] = int(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            result["peak_note"] = "tracemalloc peak of one step (NumPy reports its buffers)"
            helper = forward_backward.helper_pid
            if helper is not None:
                result["peak_note"] += " in this process, which runs half the batch"
                result["helper_max_rss_bytes"] = _max_rss_of(helper)
        forward_backward.close()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result["max_rss_bytes"] = int(rss * (1 if sys.platform == "darwin" else 1024))
        return result

    events = _events(device)
    return StepTimer(lambda repeat: timeit(step, repeat, sync, events), finish, model)


def _max_rss_of(pid: int) -> int | None:
    """The peak resident memory of process ``pid`` (Linux's VmHWM), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def train_step_torch(torch, model, device: str, batch: int, size: int):
    """PyTorch's same step on a mirror of ``model``: -> ``time(repeat)`` (seconds)."""
    import torch.nn.functional as F

    dev, sync = _torch_device(torch, device)
    mirror = torch_fcn(model, dev)
    params = [p for p in mirror.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((batch, 3, size, size), dtype=np.float32), device=dev)
    labels = torch.tensor(rng.integers(0, NUM_CLASSES, (batch, size, size)), device=dev)

    def step():
        opt.zero_grad()
        F.cross_entropy(mirror(x), labels, ignore_index=255).backward()
        opt.step()

    events = TorchEvents(torch) if device == "gpu" else None
    return lambda repeat: timeit(step, repeat, sync, events)


def paper_step(device: str, size: int, repeat: int, torch=None) -> dict:
    """Forward + loss + backward of the paper-configuration FCN-8s (VGG16) on one
    ``size`` x ``size`` image, as the paper trains (batch 1); and PyTorch's time for
    the same network when ``torch`` is given (cuDNN on the GPU)."""
    from minifcn.models import FCN8s

    xp = backend.cupy_module() if device == "gpu" else np
    sync = (lambda: backend.synchronize(xp)) if device == "gpu" else None
    model = FCN8s(21, config="paper").to(device)
    model.train()
    loss_fn = SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((1, 3, size, size), dtype=np.float32))
    labels = xp.asarray(rng.integers(0, 21, (1, size, size)).astype(np.uint8))

    def step():
        model.zero_grad()
        loss_fn(model(x), labels)
        model.backward(loss_fn.backward(), input_grad=False)  # as PyTorch: x needs no grad

    result = dict(size=size, step_s=timeit(step, repeat, sync, _events(device)))
    if torch is not None:
        import torch.nn.functional as F

        dev, tsync = _torch_device(torch, device)
        if device == "gpu":
            torch.backends.cudnn.benchmark = True
        mirror = torch_fcn(model, dev)
        mirror.train()
        tx = torch.tensor(backend.as_numpy(x), device=dev)
        tl = torch.tensor(rng.integers(0, 21, (1, size, size)), device=dev)

        def torch_step():
            mirror.zero_grad()
            F.cross_entropy(mirror(tx), tl, ignore_index=255).backward()

        tev = TorchEvents(torch) if device == "gpu" else None
        result["torch_step_s"] = timeit(torch_step, repeat, tsync, tev)
        result["torch_ratio"] = result["step_s"] / result["torch_step_s"]
    return result


def count_launches(step, xp) -> tuple[int | None, str]:
    """The device operations one call of ``step`` launches, where the CuPy in use counts
    them (the test suite's stand-in, ``stats``); (None, why) elsewhere."""
    if xp is np:
        return None, "CPU: no kernel launches"
    stats = getattr(xp, "stats", None)
    if stats is None or not hasattr(stats, "launches"):
        return None, (
            "real CuPy does not count launches; the CuPy stand-in of the test suite does "
            "(tests/test_device.py asserts the budget)"
        )
    stats.reset()
    step()
    return len(stats.launches), "counted by the CuPy stand-in"


# ------------------------------------------------------------------ machine
def machine_info(device: str) -> dict:
    info = dict(
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        cpu_threads=cpu_threads(),
        python=platform.python_version(),
        numpy=np.__version__,
        blas="unknown",
    )
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:
        pass
    if device == "gpu":
        cp = backend.cupy_module()
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        info["cupy"] = cp.__version__
    return info


# ------------------------------------------------------------------- output
def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def machine_line(rows: list) -> str:
    """What the CPU did while the layers were timed: the pool's thread counts, the steal."""
    threads = "/".join(str(t) for t in sorted({r["minifcn_threads"] for r in rows}))
    line = f"minifcn's pool: {threads} threads at the end of each layer's figures"
    steal = [r["steal_cores"] for r in rows if r.get("steal_cores") is not None]
    if steal:
        line += (
            f"; the host ran other machines on {min(steal):.2f}-{max(steal):.2f} cores' worth "
            "of this one's time while a layer was timed (steal)"
        )
    return line


def format_table(rows: list) -> str:
    header = (
        f"{'layer':<18} {'input shape':<18} {'fwd ms':>8} {'bwd ms':>8} {'plain ms':>9} "
        f"{'GFLOP/s':>8} {'% mm':>6} {'% gemm':>7} {'torch ms':>9} {'x torch':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        torch_ms = None if r.get("torch_fwd_ms") is None else r["torch_fwd_ms"] + r["torch_bwd_ms"]
        plain_ms = None if r.get("plain_fwd_ms") is None else r["plain_fwd_ms"] + r["plain_bwd_ms"]
        lines.append(
            f"{r['layer']:<18} {'x'.join(map(str, r['shape'])):<18} {r['fwd_ms']:>8.2f} "
            f"{r['bwd_ms']:>8.2f} {_fmt(plain_ms, '9.2f'):>9} {_fmt(r['gflops'], '8.1f'):>8} "
            f"{_fmt(r['pct_matmul'], '6.0f'):>6} {_fmt(r['pct_gemm'], '7.0f'):>7} "
            f"{_fmt(torch_ms, '9.2f'):>9} {_fmt(r.get('torch_ratio'), '8.2f'):>8}"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minifcn.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--repeat",
        type=bounded_int(1, 1000),
        default=5,
        help="timed runs per figure, at least (median; short calls get as many as fill 0.1 s)",
    )
    parser.add_argument(
        "--rounds",
        type=bounded_int(1, 100),
        default=None,
        help="layer table and train step: rounds of --repeat runs (minifcn's and PyTorch's "
        "alternating); each figure is the median over the rounds (default 5, with --quick 1)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--compare", choices=("torch",), help="also time PyTorch")
    parser.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    parser.add_argument("--no-train", action="store_true", help="skip the FCN-8s train step")
    parser.add_argument(
        "--no-plain",
        action="store_true",
        help="skip timing the plain path (MINIFCN_ACCEL=0) next to the accelerated one",
    )
    parser.add_argument(
        "--paper-step",
        type=bounded_int(1, 2048),
        metavar="SIZE",
        default=None,
        help="also time forward+backward of the paper-configuration FCN-8s (VGG16) on one "
        "SIZExSIZE image (e.g. 500; minutes on a CPU)",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="measure process CPU time instead of wall time: steadier on a shared machine, "
        "meaningful with one thread (OPENBLAS_NUM_THREADS=1)",
    )
    parser.add_argument(
        "--tf32",
        choices=("off", "on", "both"),
        default="both",
        help="GPU: time with TF32 off for minifcn and PyTorch alike, on for both, or both "
        "(the default; each table is labelled)",
    )
    parser.add_argument(
        "--under-load",
        action="store_true",
        help="time the default training step idle, beside one busy process and beside a "
        "second copy of itself (with --compare torch: PyTorch too), each in a fresh process",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="time the default training step at 1 thread and at every core (with --compare "
        "torch: PyTorch too), one convolution alone, in two threads and in two processes, and "
        "one copy in more and more calls, the convolution beside copies "
        "(minifcn.commands.scaling), each in fresh processes",
    )
    parser.add_argument(
        "--steps",
        type=bounded_int(1, 1000),
        default=20,
        help="--under-load, --scaling: timed steps per case",
    )
    parser.add_argument(
        "--winograd",
        action="store_true",
        help="also time Winograd F(2x2, 3x3)'s parts (minifcn.accel.winograd) at the table's "
        "3x3 shapes, against the forward without it and the accelerated forward (CPU)",
    )
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:  # see ROUNDS
        args.rounds = 1 if args.quick else ROUNDS
    return args


def measure(args, xp, sync, torch, peak: float, tf32: bool | None) -> dict:
    """The layer table, the train step and the paper step, once (at one precision)."""
    label = "" if tf32 is None else f" (TF32 {'on' if tf32 else 'off'} for both)"
    rows = [layer_row(case, args, xp, sync, torch, peak, tf32) for case in layer_cases(args.quick)]
    table = format_table(rows)
    print(f"layers{label}:\n{table}")
    print(
        "\nfwd/bwd ms: accelerated path (minifcn.accel); plain ms: fwd+bwd on the plain path "
        "(minifcn/nn, MINIFCN_ACCEL=0); % mm: fwd+bwd GFLOP/s over the square matmul above; "
        "% gemm: over a matmul shaped like the conv's own (O, C*k*k) @ (C*k*k, N*out_h*out_w); "
        "x torch: minifcn (accelerated) time / PyTorch time (fwd+bwd)."
    )
    if args.device == "cpu":
        print(machine_line(rows))
    train = None if args.no_train else measure_train_step(args, torch, label)
    paper = measure_paper_step(args, torch, label) if args.paper_step else None
    run = dict(tf32=tf32, layers=rows, train_step=train, paper_step=paper, table=table)
    if args.winograd and args.device == "cpu":
        run["winograd"] = measure_winograd(args)
    return run


def measure_winograd(args) -> list:
    """Winograd F(2x2, 3x3)'s parts (the weight transform, the input transform, the 16
    products, the output transform) timed at every 3x3 stride-1 shape of the table, beside
    the forward of the form the accelerated path takes without it and the forward it
    takes (Winograd's where ``winograd_pays``), printed."""
    rows = []
    print("\nWinograd F(2x2, 3x3), forward, ms:")
    for case in layer_cases(args.quick):
        cin, cout, k, stride, pad = case["args"] if case["kind"] == "conv" else (0,) * 5
        if k != 3 or stride != 1 or pad != 1 or case["x"][2] % 2:
            continue
        row = winograd_row(case, cin, cout, args.repeat)
        print(
            f"  {row['layer']:14s} weight {row['weight_ms']:.1f} + input {row['input_ms']:.1f}"
            f" + products {row['products_ms']:.1f} + output {row['output_ms']:.1f} = "
            f"{row['winograd_ms']:.1f}; without Winograd {row['other_form_ms']:.1f}; "
            f"minifcn's forward{' (Winograd)' if row['winograd_form'] else ''} "
            f"{row['minifcn_ms']:.1f}"
        )
        rows.append(row)
    return rows


def winograd_row(case: dict, cin: int, cout: int, repeat: int) -> dict:
    from minifcn.accel import cpu, winograd

    x, _ = case_inputs(case)
    weight = np.random.default_rng(1).standard_normal((cout, cin, 3, 3), dtype=np.float32)
    n, _, h, w = x.shape
    u = winograd.transform_weight(weight)
    v = winograd.transform_input(x, 1)
    m = winograd.products(u, v)

    def other_form():  # the form the accelerated path takes without Winograd
        return cpu._conv2d(x, weight, 1, 1, None, winograd_form=False)

    row = dict(
        layer=case["name"],
        weight_ms=timeit(lambda: winograd.transform_weight(weight), repeat) * 1e3,
        input_ms=timeit(lambda: winograd.transform_input(x, 1), repeat) * 1e3,
        products_ms=timeit(lambda: winograd.products(u, v), repeat) * 1e3,
        output_ms=timeit(lambda: winograd.transform_output(m, n, h, w), repeat) * 1e3,
        other_form_ms=timeit(other_form, repeat) * 1e3,
        minifcn_ms=timeit(lambda: cpu.conv2d(x, weight, 1, 1), repeat) * 1e3,
        winograd_form=winograd.winograd_pays(cin, cout, 3, 3, 1, h, w),
    )
    parts = ("weight_ms", "input_ms", "products_ms", "output_ms")
    row["winograd_ms"] = sum(row[k] for k in parts)
    return row


def in_rounds(rounds: int, *timers) -> list:
    """Each timer's results over ``rounds`` rounds, the timers taking turns in each round
    (minifcn's, then PyTorch's): a slow spell of a shared machine falls on both
    libraries, not on whichever was timed in it. -> one list of results a timer."""
    results = [[] for _ in timers]
    for _ in range(rounds):
        for out, timer in zip(results, timers):
            out.append(timer())
    return results


def alternating(case: dict, args, torch) -> tuple[dict, dict | None]:
    """minifcn's and PyTorch's (fwd_s, bwd_s) for one layer: ``--rounds`` rounds of
    ``--repeat`` runs each (``in_rounds``), and the median over the rounds."""
    timers = [lambda: time_ours(case, args.device, args.repeat)]
    if torch is not None:
        timers.append(lambda: time_torch(torch, case, args.device, args.repeat))
    runs = in_rounds(args.rounds, *timers)

    def median(runs):
        return dict(
            runs[0], **{k: statistics.median(r[k] for r in runs) for k in ("fwd_s", "bwd_s")}
        )

    return median(runs[0]), (median(runs[1]) if torch is not None else None)


def layer_row(case: dict, args, xp, sync, torch, peak: float, tf32: bool | None) -> dict:
    """One layer's row of the table: ours (accelerated, plain), the matmul bounds, torch;
    the pool's thread count when it was timed and the host's steal meanwhile (CPU)."""
    started, stolen = time.monotonic(), stolen_seconds()
    ours, t = alternating(case, args, torch)
    machine = dict(minifcn_threads=cpu_threads())
    if stolen is not None:  # cores' worth of time the host ran other machines on ours
        machine["steal_cores"] = (stolen_seconds() - stolen) / (time.monotonic() - started)
    f_fwd, f_bwd = flops(case, ours["out_shape"])
    total_s = ours["fwd_s"] + ours["bwd_s"]
    gflops = (f_fwd + f_bwd) / total_s / 1e9 if f_fwd else None
    shape = gemm_shape(case)
    gemm = matmul_gflops(xp, *shape, args.repeat, sync) if shape else None
    row = dict(
        layer=case["name"],
        kind=case["kind"],
        shape=list(case["x"]),
        args=list(case["args"]),
        tf32=tf32,
        fwd_ms=ours["fwd_s"] * 1e3,
        bwd_ms=ours["bwd_s"] * 1e3,
        gflops=gflops,
        pct_matmul=None if gflops is None else 100 * gflops / peak,
        gemm_shape=list(shape) if shape else None,
        gemm_gflops=gemm,
        pct_gemm=None if gflops is None or not gemm else 100 * gflops / gemm,
        **machine,
    )
    if not args.no_plain:
        with plain_timing():
            plain = time_ours(case, args.device, args.repeat)
        row["plain_fwd_ms"], row["plain_bwd_ms"] = plain["fwd_s"] * 1e3, plain["bwd_s"] * 1e3
    if t is not None:
        row["torch_fwd_ms"], row["torch_bwd_ms"] = t["fwd_s"] * 1e3, t["bwd_s"] * 1e3
        row["torch_ratio"] = total_s / (t["fwd_s"] + t["bwd_s"])
    return row


def measure_train_step(args, torch, label: str) -> dict | None:
    """The mini FCN-8s train step: accelerated, plain and PyTorch's (printed and returned)."""
    batch, img = (2, 64) if args.quick else (8, 64)
    ours = train_step_ours(args.device, batch, img)
    if ours is None:
        return None
    timers = [lambda: ours.time(args.repeat)]
    if torch is not None:
        theirs = train_step_torch(torch, ours.model, args.device, batch, img)
        timers.append(lambda: theirs(args.repeat))
    seconds = [statistics.median(runs) for runs in in_rounds(args.rounds, *timers)]
    train = ours.finish(seconds[0])
    train["rounds"] = args.rounds
    line = (
        f"\nmini FCN-8s train step{label} (batch {batch}, {img}x{img}): "
        f"{train['step_s'] * 1e3:.1f} ms, {train['images_per_s']:.1f} images/s, "
        f"peak memory {train['peak_bytes'] / 2**20:.1f} MiB ({train['peak_note']}), "
        f"max RSS {train['max_rss_bytes'] / 2**20:.0f} MiB"
    )
    if train.get("helper_max_rss_bytes"):
        line += f" (and {train['helper_max_rss_bytes'] / 2**20:.0f} MiB the batch split's helper)"
    if train["launches_per_step"] is not None:
        line += f", {train['launches_per_step']} device launches a step"
    if not args.no_plain:
        with plain_timing():
            built = train_step_ours(args.device, batch, img)
            plain = built.finish(built.time(args.repeat))
        train["plain_step_s"] = plain["step_s"]
        train["plain_speedup"] = plain["step_s"] / train["step_s"]
        train["plain_launches_per_step"] = plain["launches_per_step"]
        line += (
            f"\n  plain path: {plain['step_s'] * 1e3:.1f} ms, "
            f"{plain['images_per_s']:.1f} images/s; accelerated / plain = "
            f"{train['step_s'] / plain['step_s']:.2f}"
        )
    if torch is not None:
        train["torch_step_s"] = seconds[1]
        train["torch_images_per_s"] = batch / seconds[1]
        train["torch_ratio"] = train["step_s"] / seconds[1]
        line += (
            f"\n  torch: {seconds[1] * 1e3:.1f} ms, {batch / seconds[1]:.1f} images/s; "
            f"minifcn / torch = {train['torch_ratio']:.2f}"
        )
    print(line)
    return train


def measure_paper_step(args, torch, label: str) -> dict:
    """The paper FCN-8s forward + loss + backward at --paper-step (and PyTorch's)."""
    paper = paper_step(args.device, args.paper_step, args.repeat, torch)
    line = (
        f"\npaper FCN-8s (VGG16){label}, 1x3x{args.paper_step}x{args.paper_step}, "
        f"forward+loss+backward: {paper['step_s'] * 1e3:.1f} ms"
    )
    if "torch_step_s" in paper:
        line += (
            f"\n  torch: {paper['torch_step_s'] * 1e3:.1f} ms; "
            f"minifcn / torch = {paper['torch_ratio']:.2f}"
        )
    print(line)
    return paper


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args.worker, args.quick, args.steps)
    keep_freed_memory()  # as the train command does
    if args.json:  # before the minutes of timing: never overwrite, fail early
        from minifcn.commands.args import check_new_file

        check_new_file(args.json, "--json")
    if args.device == "gpu":
        from minifcn.commands.args import ensure_device

        ensure_device("gpu")  # one line and exit 1 when the GPU cannot be used
    if args.under_load or args.scaling:
        if args.device == "gpu":
            flag = "--under-load" if args.under_load else "--scaling"
            raise SystemExit(f"error: {flag} measures the CPU; drop --device gpu")
        return under_load_main(args) if args.under_load else scaling_main(args)
    CLOCK["now"] = time.process_time if args.cpu_time else time.perf_counter
    SETTLE["seconds"] = 0.0 if args.quick else 0.25
    WARM_UP["seconds"] = 0.0 if args.quick else 0.1
    SPAN["seconds"] = 0.0 if args.quick else 0.1
    xp = backend.cupy_module() if args.device == "gpu" else np
    sync = (lambda: backend.synchronize(xp)) if args.device == "gpu" else None
    torch = import_torch() if args.compare == "torch" else None

    info = machine_info(args.device)
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; numpy {info['numpy']} "
        f"({info['blas']}, one thread a piece); minifcn threads: {adapt_threads().describe()}"
    )
    if "gpu" in info:
        print(f"gpu: {info['gpu']} (CuPy {info['cupy']})")
    if torch is not None:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    size = 128 if args.quick else 1024
    precisions = [None]  # the CPU computes in float32, nothing to choose
    if args.device == "gpu":
        precisions = {"off": [False], "on": [True], "both": [False, True]}[args.tf32]
    runs = []
    for tf32 in precisions:
        settings = {}
        if tf32 is not None:
            settings["cupy_tf32_set_directly"] = backend.set_tf32(tf32)
            settings["CUPY_TF32"] = os.environ["CUPY_TF32"]
            if torch is not None:
                settings["torch"] = set_torch_tf32(torch, tf32)
            print(f"\n--- TF32 {'on' if tf32 else 'off'} for minifcn (CuPy) and PyTorch alike")
        peak = matmul_gflops(xp, size, size, size, args.repeat, sync)
        print(f"float32 matmul {size}x{size}x{size}: {peak:.1f} GFLOP/s (the im2col ceiling)\n")
        run = measure(args, xp, sync, torch, peak, tf32)
        run.update(matmul=dict(size=size, gflops=peak), precision_settings=settings)
        runs.append(run)

    first = runs[0]
    result = dict(
        machine=info,
        settings=dict(
            device=args.device,
            repeat=args.repeat,
            rounds=args.rounds,
            quick=args.quick,
            compare=args.compare,
            clock="cuda events"
            if args.device == "gpu"
            else ("process_time" if args.cpu_time else "perf_counter"),
            tf32=args.tf32 if args.device == "gpu" else None,
            cpu_threads=adapt_threads().describe(),
        ),
        matmul=first["matmul"],
        layers=first["layers"],
        train_step=first["train_step"],
        paper_step=first["paper_step"],
        winograd=first.get("winograd"),
        table=first["table"],
        precision_runs=runs,
    )
    write_json(args.json, result)
    return result


def write_json(path, result: dict) -> None:
    """Write ``result`` to a new file ``path`` (never over one); a full disk is one line."""
    if path:
        from minifcn.commands.args import write_failed
        from minifcn.storage.atomic import write_text_new

        try:
            write_text_new(path, json.dumps(result, indent=2))
        except OSError as err:
            raise write_failed(path, err) from None
        print(f"\nwrote {path}")


# ---------------------------------------------------------------- under load
WORKERS = ("busy", "loop-minifcn", "loop-torch", "measure-minifcn", "measure-torch")
WORKERS += (scaling.HALF_STEP, scaling.WHOLE_STEP)  # the measured step's variants (--scaling)
WORKERS += scaling.WORKER_KINDS
WORKER_SECONDS = 600  # a load worker stops by itself after this, whatever happens


DEFAULT_BATCH = 2  # the default training's batch


def default_step(impl: str, quick: bool, batch: int = DEFAULT_BATCH, split: bool = True):
    """One step of the default training (mini FCN-8s on shapes, batch 2, 96x96, Adam
    lr 3e-3), as a function, in minifcn or in PyTorch (its mirror of the same net);
    ``batch`` images instead of the default's 2 where given; ``split=False``: minifcn's
    batch whole, not in the batch split's halves."""
    from minifcn.data.shapes import CLASS_NAMES
    from minifcn.models import FCN8s
    from minifcn.optim import Adam

    classes, side = len(CLASS_NAMES), 32 if quick else 96
    model = FCN8s(classes, "mini", rng=0)
    model.train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, side, side), dtype=np.float32)
    labels = rng.integers(0, classes, (batch, side, side))
    if impl == "minifcn":
        opt = Adam(model.parameters(), lr=3e-3)
        forward_backward = TrainStep(model, SoftmaxCrossEntropy(), split=split)
        labels = labels.astype(np.uint8)

        def step():
            adapt_threads()  # what the training loop does every step
            opt.zero_grad()
            forward_backward(x, labels)
            opt.step()

        return step
    import torch
    import torch.nn.functional as F

    mirror = torch_fcn(model, "cpu")
    topt = torch.optim.Adam([p for p in mirror.parameters() if p.requires_grad], lr=3e-3)
    tx, tl = torch.tensor(x), torch.tensor(labels)

    def torch_step():
        topt.zero_grad()
        F.cross_entropy(mirror(tx), tl, ignore_index=255).backward()
        topt.step()

    return torch_step


def _machine_busy() -> float | None:
    from minifcn.accel.threads import _busy_seconds

    return _busy_seconds()


def run_worker(kind: str, quick: bool, steps: int) -> dict:
    """A process of the --under-load test: a load (``busy``, ``loop-*``: runs until it is
    stopped, at most WORKER_SECONDS) or the measured one (``measure-*``: prints one JSON
    line with its step times; ``half-minifcn``: minifcn's, on half the batch;
    ``whole-minifcn``: minifcn's, with the batch whole, not in the batch split's halves)."""
    if kind in scaling.WORKER_KINDS:
        return scaling.worker(kind, quick)
    deadline = time.monotonic() + WORKER_SECONDS
    if kind == "busy":
        while time.monotonic() < deadline:  # one core, kept busy in pure Python
            pass
        return {}
    impl = kind.split("-", 1)[1]
    batch = DEFAULT_BATCH // 2 if kind == scaling.HALF_STEP else DEFAULT_BATCH
    step = default_step(impl, quick, batch, split=kind != scaling.WHOLE_STEP)
    if kind.startswith("loop"):
        while time.monotonic() < deadline:
            step()
        return {}
    settle = 0.5 if quick else 5.0  # warm up, and let the thread choice see the load
    t_end = time.monotonic() + settle
    step()
    while time.monotonic() < t_end:
        step()
    own_cpu = adapt_threads().own_cpu if impl == "minifcn" else time.process_time  # + helper
    busy0, cpu0, wall0 = _machine_busy(), own_cpu(), time.perf_counter()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    busy1, cpu1, wall1 = _machine_busy(), own_cpu(), time.perf_counter()
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / (wall1 - wall0)
    if impl == "minifcn":
        threads = adapt_threads().threads
    else:
        import torch

        threads = torch.get_num_threads()
    result = dict(
        impl=impl,
        batch=batch,
        median_step_s=statistics.median(times),
        step_s=times,
        threads=threads,
        cpu_per_wall=(cpu1 - cpu0) / (wall1 - wall0),
        others_busy_cores=others,
    )
    scaling.emit(result)
    return result


def _worker_cmd(kind: str, args) -> list:
    cmd = [sys.executable, "-m", "minifcn.commands.bench", "--worker", kind]
    return cmd + ["--steps", str(args.steps)] + (["--quick"] if args.quick else [])


def measure_beside(
    impl: str, load: str | None, args, env: dict | None = None, flag: str = "--under-load"
) -> dict:
    """The measured worker for ``impl``, beside the load worker ``load`` (or none); ``env``:
    environment variables for the measured worker; ``flag``: the option a failure names."""
    loads = []
    try:
        if load is not None:
            loads.append(subprocess.Popen(_worker_cmd(load, args), stdout=subprocess.DEVNULL))
            time.sleep(0.5 if args.quick else 3.0)  # the load is under way before we start
        try:
            load_avg = os.getloadavg()[0]
        except OSError:
            load_avg = None
        proc = subprocess.run(
            _worker_cmd(f"measure-{impl}", args),
            capture_output=True,
            text=True,
            timeout=WORKER_SECONDS,
            env=None if env is None else {**os.environ, **env},
        )
    finally:
        for p in loads:  # the processes this function started, by their handles
            p.terminate()
            p.wait()
    failure = f"{flag}: the {impl} measurement"
    result = scaling.worker_result(proc.stdout, proc.stderr, proc.returncode, failure)
    result["load"] = load or "none"
    result["load_average_before"] = load_avg
    return result


def _impls(args, flag: str) -> list:
    """minifcn, and PyTorch with --compare torch (which must then be importable)."""
    if args.compare != "torch":
        return ["minifcn"]
    if import_torch() is None:
        raise SystemExit(f"error: {flag} --compare torch: PyTorch cannot be imported")
    return ["minifcn", "torch"]


def scaling_main(args) -> dict:
    from minifcn.accel.threads import usable_cores

    impls = _impls(args, "--scaling")
    info = machine_info("cpu")
    print(f"machine: {info['cpu']}, {info['cores']} cores")
    result = scaling.main(
        worker_cmd=lambda kind: _worker_cmd(kind, args),
        measure_step=lambda impl, env: measure_beside(impl, None, args, env, "--scaling"),
        impls=impls,
        cores=usable_cores(),
        quick=args.quick,
    )
    result = dict(machine=info, settings=dict(quick=args.quick, steps=args.steps), scaling=result)
    write_json(args.json, result)
    return result


UNDER_LOAD_TARGET = 2.5  # the slowdown the issue allows in each loaded case


def under_load_main(args) -> dict:
    impls = _impls(args, "--under-load")
    info = machine_info("cpu")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; default settings "
        f"(minifcn {os.environ.get('MINIFCN_THREADS') or 'MINIFCN_THREADS unset'})"
    )
    cases = {}
    for impl in impls:
        for name, load in (("idle", None), ("busy", "busy"), ("copy", f"loop-{impl}")):
            r = measure_beside(impl, load, args)
            cases[f"{impl}/{name}"] = r
            print(
                f"{impl:8s} {name:5s}: {r['median_step_s'] * 1e3:8.1f} ms a step "
                f"({r['threads']} threads; others kept {_fmt(r['others_busy_cores'], '.2f')} "
                f"cores busy; load average before {_fmt(r['load_average_before'], '.2f')})"
            )
    slowdowns = {}
    for impl in impls:
        idle = cases[f"{impl}/idle"]["median_step_s"]
        for name in ("busy", "copy"):
            slowdowns[f"{impl}/{name}"] = cases[f"{impl}/{name}"]["median_step_s"] / idle
    lines = ["", "slowdown over idle (median step time):"]
    for name in ("busy", "copy"):
        text = f"  beside {'one busy process' if name == 'busy' else 'a second copy'}: "
        text += ", ".join(f"{impl} {slowdowns[f'{impl}/{name}']:.2f}x" for impl in impls)
        mine = slowdowns[f"minifcn/{name}"]
        verdict = f"minifcn {'within' if mine <= UNDER_LOAD_TARGET else 'over'} the "
        verdict += f"{UNDER_LOAD_TARGET}x target"
        if "torch" in impls:
            below = mine < slowdowns[f"torch/{name}"]
            verdict += f", {'below' if below else 'not below'} PyTorch's"
        lines.append(f"{text} ({verdict})")
    print("\n".join(lines))
    result = dict(
        machine=info,
        settings=dict(quick=args.quick, steps=args.steps, compare=args.compare),
        under_load=dict(cases=cases, slowdowns=slowdowns, target=UNDER_LOAD_TARGET),
    )
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
