"""What a second thread buys on the CPU, and what it costs: ``python -m minifcn.bench --scaling``.

Two measurements, each in fresh processes:

* **The training step at one thread and at every core.** The default training step
  (mini FCN-8s on shapes, batch 2, 96x96, Adam) with ``MINIFCN_THREADS=1`` and with
  one thread per usable core; with ``--compare torch`` PyTorch's step too, with
  ``OMP_NUM_THREADS`` at the same counts. The ratio is what each library's threads buy.
* **One convolution, alone and side by side.** A stride-1 3x3 convolution of two
  images, 16 -> 16 channels at 57x57 (conv2_2 of the mini network at the bench's
  size, in the row-shift form), on one thread: what one of minifcn's threads runs at
  a time. It is repeated for a few seconds alone, in two threads of one process, and
  in two processes at once. NumPy lets go of the interpreter lock inside each call
  and takes it back after; a thread that finds it taken waits for the other to let
  go. If two processes keep the time of one and two threads do not, what the threads
  lose is that wait, not the machine's cores or memory.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time

import numpy as np

PIECE_SHAPE = (2, 16, 57, 57)  # images, channels, height, width
PIECE_MODES = ("piece-alone", "piece-threads")


def piece_worker(kind: str, quick: bool) -> dict:
    """A process of the convolution test: the convolution repeated for a few seconds, in
    one thread (``piece-alone``) or in two at once (``piece-threads``); prints one JSON
    line with each thread's time per call. Run with ``MINIFCN_THREADS=1``, so that each
    call runs in the thread that made it."""
    from minifcn.accel import cpu

    rng = np.random.default_rng(0)
    n, c, h, w = (1, 8, 32, 32) if quick else PIECE_SHAPE
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((c, c, 3, 3), dtype=np.float32)
    seconds = 0.2 if quick else 3.0
    per_call = []

    def repeat():
        for _ in range(3):  # warm up the buffers
            cpu.conv2d(x, weight, 1, 1)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            cpu.conv2d(x, weight, 1, 1)
            calls += 1
        per_call.append((time.perf_counter() - start) / calls)

    threads = [threading.Thread(target=repeat) for _ in range(2 if kind == "piece-threads" else 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = dict(kind=kind, shape=[n, c, h, w], per_call_s=per_call)
    print("RESULT " + json.dumps(result), flush=True)
    return result


def _result(proc, what: str) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: --scaling: {what} failed: {tail}")
    return json.loads(lines[-1][len("RESULT ") :])


def measure_pieces(worker_cmd, env: dict, timeout: float) -> dict:
    """The convolution alone, in two threads, and in two processes (each process alone)."""
    env = {**env, "MINIFCN_THREADS": "1"}

    def run(kind):
        return subprocess.Popen(
            worker_cmd(kind), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    out = {}
    for name, kinds in (
        ("alone", ["piece-alone"]),
        ("threads", ["piece-threads"]),
        ("processes", ["piece-alone", "piece-alone"]),
    ):
        procs = [run(kind) for kind in kinds]  # started together
        times = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
            times += _result(done, f"the convolution test ({name})")["per_call_s"]
        out[name] = times
    return out


def scaling_report(steps: dict, pieces: dict, cores: int) -> list:
    """The lines ``--scaling`` prints: steps[impl][threads] = median step seconds."""
    lines = [f"the default training step (median of the timed steps), 1 and {cores} threads:"]
    for impl, by_threads in steps.items():
        one, many = by_threads["1"], by_threads[str(cores)]
        lines.append(
            f"  {impl:8s} 1 thread {one * 1e3:7.1f} ms, {cores} threads {many * 1e3:7.1f} ms: "
            f"the threads buy {one / many:.2f}x"
        )
    alone = statistics.median(pieces["alone"])
    lines.append("one convolution on one thread, repeated (time per call):")
    lines.append(f"  alone {alone * 1e6:.0f} us")
    for name in ("threads", "processes"):
        each = ", ".join(f"{t * 1e6:.0f}" for t in pieces[name])
        slower = statistics.median(pieces[name]) / alone
        lines.append(f"  two {name:9s} at once: {each} us ({slower:.2f}x the time alone)")
    return lines


def main(args, worker_cmd, measure_step, impls: list, cores: int) -> dict:
    """``--scaling``: ``measure_step(impl, env)`` times one fresh process's default step."""
    steps = {}
    for impl in impls:
        steps[impl] = {}
        for n in sorted({1, cores}):
            name = "MINIFCN_THREADS" if impl == "minifcn" else "OMP_NUM_THREADS"
            steps[impl][str(n)] = measure_step(impl, {name: str(n)})["median_step_s"]
    pieces = measure_pieces(worker_cmd, dict(os.environ), timeout=600)
    print("\n".join(scaling_report(steps, pieces, cores)))
    return dict(steps=steps, pieces=pieces, cores=cores, piece_shape=list(PIECE_SHAPE))
