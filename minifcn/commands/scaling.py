"""What a second thread buys on the CPU, and what it costs: ``python -m minifcn.bench --scaling``.

Six measurements, each in fresh processes:

* **The training step at one thread and at every core.** The default training step
  (mini FCN-8s on shapes, batch 2, 96x96, Adam) with ``MINIFCN_THREADS=1`` and with
  one thread per usable core; with ``--compare torch`` PyTorch's step too, with
  ``OMP_NUM_THREADS`` at the same counts. The ratio is what each library's threads buy.
* **One convolution, alone and side by side.** A stride-1 3x3 convolution of two
  images, 16 -> 16 channels at 57x57 (conv2_2 of the mini network at the bench's
  size, in the row-shift form), on one thread: what one of minifcn's threads runs at
  a time. It is repeated for a few seconds alone, in two threads of one process, and
  in two processes at once. If two processes keep the time of one and two threads do
  not, what the threads lose is something threads share and processes do not, not the
  machine's cores.
* **One copy, in more and more calls.** The same 1.6 MB copied in 1, 4, 16 and 64
  NumPy calls (``np.copyto`` of equal slices), alone and in two threads at once. NumPy
  lets go of the interpreter lock inside each call and takes it back after; a thread
  that finds it taken waits for the other to let go. That wait is paid per call, so
  the more calls the same work takes, the more two threads lose.
* **The convolution beside copies.** The convolution repeated on one thread while a
  second thread repeats a 16 MB copy in one call (memory traffic, the lock nearly
  always free), and while it repeats the 1.6 MB copy in 64 calls (little traffic, the
  lock taken and let go all the time). The first says what sharing the memory costs,
  the second what sharing the lock costs.
* **The batch split over processes.** The same step on half the batch, in two
  processes at once on one thread each: what the second core gives when each core
  runs its own images and nothing is shared but the memory (the slower half is the
  step's time).
* **A job handed to the pool.** minifcn's pool of two threads runs a job of two empty
  pieces, repeated: the time is what handing work to a waiting thread and back costs,
  paid by every layer's job that runs on the pool (``minifcn.accel.workers``).

Every worker process prints its figures as one JSON line (``emit``), which the
measuring process reads back (``worker_result``); ``--under-load`` uses the same two.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import threading
import time

import numpy as np

PIECE_SHAPE = (2, 16, 57, 57)  # images, channels, height, width
QUICK_PIECE_SHAPE = (1, 8, 32, 32)
RESULT = "RESULT "  # the prefix of a worker's JSON line
WORKER_KINDS = ("piece-alone", "piece-threads", "copies", "beside", "handover")
HALF_STEP = "half-minifcn"  # bench's worker that times the default step on half the batch
WHOLE_STEP = "whole-minifcn"  # ... and the default step with its batch whole, not in halves
COPY_VALUES = 400_000  # float32: 1.6 MB
COPY_CALLS = (1, 4, 16, 64)
LONG_COPY_VALUES = 4_000_000  # float32: 16 MB, in one call


def emit(result: dict) -> None:
    """Print a worker's figures as its one JSON line."""
    print(RESULT + json.dumps(result), flush=True)


def worker_result(stdout: str, stderr: str, returncode: int, failure: str) -> dict:
    """The JSON line a worker process printed, or one line naming ``failure`` (and the
    worker's last line on stderr) and exit, if it failed."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT)]
    if returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: {failure} failed: {tail}")
    return json.loads(lines[-1][len(RESULT) :])


def _repeat(fn, seconds: float, out: list) -> None:
    """Append the time per call of ``fn`` over ``seconds`` (after 3 warm-up calls)."""
    for _ in range(3):
        fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    out.append((time.perf_counter() - start) / calls)


def _side_by_side(make, threads: int, seconds: float) -> list:
    """Each of ``threads`` threads repeats its own ``make()`` at once: their times per call."""
    times = []
    runs = [threading.Thread(target=_repeat, args=(make(), seconds, times)) for _ in range(threads)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    return times


def _copy_in(calls: int, values: int):
    """A function copying ``values`` float32 in ``calls`` NumPy calls (equal slices)."""
    src = np.random.default_rng(0).standard_normal(values, dtype=np.float32)
    dst = np.empty_like(src)
    cuts = [slice(k * values // calls, (k + 1) * values // calls) for k in range(calls)]
    pairs = [(dst[c], src[c]) for c in cuts]

    def copy():
        for d, s in pairs:
            np.copyto(d, s)

    return copy


def _copy_values(values: int, quick: bool) -> int:
    """A copy test's size: a tenth of it with --quick."""
    return values // 10 if quick else values


def _convolution(quick: bool):
    """The test's convolution, as a function of no arguments (minifcn's CPU path)."""
    from minifcn.accel import cpu

    rng = np.random.default_rng(0)
    n, c, h, w = QUICK_PIECE_SHAPE if quick else PIECE_SHAPE
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((c, c, 3, 3), dtype=np.float32)
    return lambda: cpu.conv2d(x, weight, 1, 1)


def _in_background(fn):
    """Start a thread repeating ``fn()`` until the returned function is called."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            fn()

    thread = threading.Thread(target=loop)
    thread.start()

    def finish():
        stop.set()
        thread.join()

    return finish


def _beside_copies(quick: bool, seconds: float) -> dict:
    """The convolution's time per call on this thread: alone, beside a thread copying
    16 MB in one call, and beside one copying 1.6 MB in 64 calls."""
    conv = _convolution(quick)
    long_values, short_values = (
        _copy_values(LONG_COPY_VALUES, quick),
        _copy_values(COPY_VALUES, quick),
    )
    out = dict(alone=_side_by_side(lambda: conv, 1, seconds)[0])
    out.update(long_values=long_values, short_values=short_values, short_calls=COPY_CALLS[-1])
    for name, copy in (
        ("long_copy", _copy_in(1, long_values)),
        ("short_copies", _copy_in(COPY_CALLS[-1], short_values)),
    ):
        finish = _in_background(copy)
        out[name] = _side_by_side(lambda: conv, 1, seconds)[0]
        finish()
    return out


def _handover(seconds: float) -> float:
    """Median seconds of a job of two empty pieces on a pool of two threads."""
    from minifcn.accel.workers import Workers

    pool = Workers(2)
    try:
        times, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 5:
            start = time.perf_counter()
            pool.run(_nothing, 2)
            times.append(time.perf_counter() - start)
    finally:
        pool.close()
    return statistics.median(times)


def _nothing(i: int) -> None:
    """An empty piece."""


def worker(kind: str, quick: bool) -> dict:
    """A process of the tests (run with ``MINIFCN_THREADS=1``, so that each convolution
    runs in the thread that called it): the convolution repeated alone (``piece-alone``)
    or in two threads at once (``piece-threads``), the copy test (``copies``), the
    convolution beside copies (``beside``), or the pool's handover (``handover``). Prints
    one JSON line."""
    seconds = 0.1 if quick else 3.0
    if kind == "beside":
        result = _beside_copies(quick, seconds)
    elif kind == "handover":
        result = dict(per_job_s=_handover(seconds))
    elif kind == "copies":
        values = _copy_values(COPY_VALUES, quick)
        calls = {}
        for count in COPY_CALLS:
            make = functools.partial(_copy_in, count, values)
            calls[str(count)] = dict(
                alone=_side_by_side(make, 1, seconds / 3)[0],
                threads=_side_by_side(make, 2, seconds / 3),
            )
        result = dict(values=values, calls=calls)
    else:
        make = functools.partial(_convolution, quick)
        result = dict(per_call_s=_side_by_side(make, 2 if kind == "piece-threads" else 1, seconds))
    emit(result)
    return result


def _finish(proc, what: str, timeout: float) -> dict:
    """The figures of a worker process started with ``Popen``."""
    stdout, stderr = proc.communicate(timeout=timeout)
    return worker_result(stdout, stderr, proc.returncode, f"--scaling: {what}")


def _start(worker_cmd, kind: str, env: dict):
    """A worker process of ``kind``, on one thread (``MINIFCN_THREADS=1``)."""
    env = {**env, "MINIFCN_THREADS": "1"}
    return subprocess.Popen(
        worker_cmd(kind), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def measure_halves(worker_cmd, env: dict, timeout: float) -> list:
    """The median step of two processes started together, each the default step on half
    the batch (``HALF_STEP``) on one thread; a process still running when the other
    failed is stopped."""
    procs = [_start(worker_cmd, HALF_STEP, env) for _ in range(2)]
    try:
        return [_finish(p, "the step on half the batch", timeout)["median_step_s"] for p in procs]
    finally:
        for p in procs:  # the processes this function started, by their handles
            if p.poll() is None:
                p.kill()
                p.wait()


def measure_pieces(worker_cmd, env: dict, timeout: float) -> dict:
    """The convolution alone, in two threads, and in two processes (each process alone);
    then the copy test, the convolution beside copies and the pool's handover."""

    def start(kind):
        return _start(worker_cmd, kind, env)

    out = {}
    for name, kinds in (
        ("alone", ["piece-alone"]),
        ("threads", ["piece-threads"]),
        ("processes", ["piece-alone", "piece-alone"]),
    ):
        procs = [start(kind) for kind in kinds]  # started together
        what = f"the convolution test ({name})"
        out[name] = [t for p in procs for t in _finish(p, what, timeout)["per_call_s"]]
    out["copies"] = _finish(start("copies"), "the copy test", timeout)
    out["beside"] = _finish(start("beside"), "the convolution beside copies", timeout)
    out["handover"] = _finish(start("handover"), "the pool's handover", timeout)["per_job_s"]
    return out


def scaling_report(
    steps: dict, pieces: dict, cores: int, halves: list | None = None, whole: float | None = None
) -> list:
    """The lines ``--scaling`` prints: steps[impl][threads] = median step seconds; halves:
    the two half-batch processes' median steps; whole: minifcn's step on one thread with
    the batch whole (not in the batch split's halves)."""
    lines = [f"the default training step (median of the timed steps), 1 and {cores} threads:"]
    for impl, by_threads in steps.items():
        one, many = by_threads["1"], by_threads[str(cores)]
        lines.append(
            f"  {impl:8s} 1 thread {one * 1e3:7.1f} ms, {cores} threads {many * 1e3:7.1f} ms: "
            f"the threads buy {one / many:.2f}x"
        )
    if halves:
        one = steps["minifcn"]["1"]
        each = ", ".join(f"{t * 1e3:.1f}" for t in halves)
        lines.append(
            f"  minifcn, the batch split over two processes at once (half each, 1 thread): "
            f"{each} ms: the second core buys {one / max(halves):.2f}x"
        )
    if whole:
        one = steps["minifcn"]["1"]
        lines.append(
            f"  minifcn 1 thread, the batch whole (not in halves): {whole * 1e3:.1f} ms: "
            f"on one thread the halves take {one / whole:.2f}x as long"
        )
    alone = statistics.median(pieces["alone"])
    lines.append("one convolution on one thread, repeated (time per call):")
    lines.append(f"  alone {alone * 1e6:.0f} us")
    for name in ("threads", "processes"):
        each = ", ".join(f"{t * 1e6:.0f}" for t in pieces[name])
        slower = statistics.median(pieces[name]) / alone
        lines.append(f"  two {name:9s} at once: {each} us ({slower:.2f}x the time alone)")
    copies = pieces["copies"]
    lines.append(f"the same {copies['values'] * 4 / 1e6:g} MB copy in more NumPy calls:")
    for count, t in copies["calls"].items():
        two = statistics.mean(t["threads"])
        lines.append(
            f"  {int(count):3d} calls: alone {t['alone'] * 1e6:6.0f} us, two threads at once "
            f"{two * 1e6:6.0f} us each ({two / t['alone']:.2f}x)"
        )
    if "beside" in pieces:
        beside = pieces["beside"]
        lines.append("the convolution on one thread while a second thread copies:")
        lines.append(f"  alone {beside['alone'] * 1e6:.0f} us")
        long_mb, short_mb = beside["long_values"] * 4 / 1e6, beside["short_values"] * 4 / 1e6
        calls = beside["short_calls"]
        for key, what in (
            ("long_copy", f"{long_mb:g} MB in one call (memory traffic)"),
            ("short_copies", f"{short_mb:g} MB in {calls} calls (turns at the lock)"),
        ):
            ratio = beside[key] / beside["alone"]
            lines.append(f"  beside {what}: {beside[key] * 1e6:.0f} us ({ratio:.2f}x)")
    if "handover" in pieces:
        lines.append(
            f"a job of two empty pieces on a pool of two threads: {pieces['handover'] * 1e6:.0f} us"
        )
    return lines


def main(worker_cmd, measure_step, impls: list, cores: int, quick: bool) -> dict:
    """``--scaling``: ``measure_step(impl, env)`` times one fresh process's default step;
    ``worker_cmd(kind)`` is the command of a worker process of ``kind``."""
    steps = {}
    for impl in impls:
        steps[impl] = {}
        for n in sorted({1, cores}):
            name = "MINIFCN_THREADS" if impl == "minifcn" else "OMP_NUM_THREADS"
            steps[impl][str(n)] = measure_step(impl, {name: str(n)})["median_step_s"]
    halves = measure_halves(worker_cmd, dict(os.environ), timeout=600)
    whole = _finish(_start(worker_cmd, WHOLE_STEP, dict(os.environ)), "the whole batch", 600)
    whole = whole["median_step_s"]
    pieces = measure_pieces(worker_cmd, dict(os.environ), timeout=600)
    print("\n".join(scaling_report(steps, pieces, cores, halves, whole)))
    shape = QUICK_PIECE_SHAPE if quick else PIECE_SHAPE
    return dict(
        steps=steps, halves=halves, whole_one_thread=whole, pieces=pieces, cores=cores,
        piece_shape=list(shape),
    )  # fmt: skip
