"""The accelerated CPU path's batch split: a training batch's forward, loss and backward
as two fixed halves, the second run by a helper process at the same time as the first.

Why processes: the layers' threads take turns at the interpreter lock at every NumPy
call and wake each other at every layer (``python -m minifcn.bench --scaling``
measures both), so a second thread buys a training step little; a second process
has its own interpreter and buys most of a second core.

The rule, and why the result never depends on the cores or the load:

* A batch of N >= 2 images on the accelerated CPU path is always cut the same way,
  into rows [0, ceil(N/2)) and [ceil(N/2), N), whatever the cores; the loss is summed
  over each half and divided by the whole batch's count of labelled pixels.
* Dropout: each half draws the mask of the *whole* batch from the generator as it
  was when the step began and keeps its own rows (``nn.dropout.RowsOfBatch``), so the
  masks are those of the whole batch run at once and the generator ends the step as it
  would.
* With two or more idle cores (``minifcn.accel.threads``) the helper runs the second
  half while this process runs the first; with one, this process runs both, one after
  the other. Each parameter's gradient is then ``(grad + first half's) + second
  half's`` in either case (the helper's starts from zero; a layer adds its gradient
  into a parameter once per backward), so both give the same bits.

The helper (``python -m minifcn.accel.split``) is started on the first step that
can use it and lives as long as this process: it gets a copy of the model once
(pickled, without the layers' caches), then for every step its half of the batch,
the dropout generators' states and the frozen flags through a socket; the weights
and its gradients travel through one shared memory block (``memfd``, Linux). It
ends when the socket closes. If it cannot start or is lost, this process runs the
second half itself (same bits) and says so once on stderr. Nothing is split while
``minifcn.dispatch.use`` replaces a layer's functions (a helper could not see them),
nor on a rank of ``mpiexec`` (``TrainStep(split=False)``).
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from ..backend import accelerated
from ..dispatch import in_use
from ..nn.dropout import RowsOfBatch
from ..nn.loss import SoftmaxCrossEntropy
from .threads import adapt_threads

START_SECONDS = 60.0  # a helper not ready by then is given up


def halves(n: int) -> tuple[slice, slice]:
    """The two parts of a batch of ``n`` >= 2 images: the first gets the odd one."""
    cut = (n + 1) // 2
    return slice(0, cut), slice(cut, n)


def splits(x) -> bool:
    """Whether a training step on images ``x`` runs as two halves: NumPy images, at least
    two of them, on the accelerated path, with no ``use()`` block replacing layers."""
    return isinstance(x, np.ndarray) and len(x) >= 2 and accelerated() and not in_use()


def dropout_layers(model) -> list:
    """The modules that draw from a generator of their own (the dropout layers), in order."""
    return [m for m in model.modules() if hasattr(m, "rng") and hasattr(m, "p")]


def run_half(model, drops, loss_fn, x, labels, total: int, rows: slice, scale: float) -> float:
    """Forward, summed loss and backward of ``x``, ``labels``: ``rows`` of a batch of
    ``total`` images (``drops``: the model's ``dropout_layers``). The gradients (of the
    loss times ``scale``) add into the parameters'. Returns the half's summed loss."""
    kept = [m.rng for m in drops]
    for m in drops:
        m.rng = RowsOfBatch(m.rng, total, rows.start)
    try:
        loss = loss_fn(model(x), labels)
        model.backward(loss_fn.backward(scale), input_grad=False)
    finally:
        for m, rng in zip(drops, kept):
            m.rng = rng
    return loss


def _layout(params) -> tuple[list, int]:
    """(byte offset, shape, dtype) of each parameter in the shared block, and its size."""
    out, offset = [], 0
    for p in params:
        out.append((offset, tuple(p.data.shape), p.data.dtype.str))
        offset += -(-p.data.nbytes // 64) * 64  # each array 64-byte aligned
    return out, offset


def _views(block, layout) -> list:
    return [
        np.ndarray(shape, dtype=np.dtype(dt), buffer=block, offset=off) for off, shape, dt in layout
    ]


def _replica_bytes(model) -> bytes:
    """The model pickled without what its layers cached from their last call."""
    cached = [(m, m._cache) for m in model.modules() if getattr(m, "_cache", None) is not None]
    for m, _ in cached:
        m._cache = None
    try:
        return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for m, cache in cached:
            m._cache = cache


def _helper_environment() -> dict:
    """This process's environment, with this copy of minifcn first on the helper's path
    (the one this process imported, wherever that came from)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    return env


class _Helper:
    """The helper process, its socket and the shared block (weights, then its gradients)."""

    def __init__(self, model, layout, size: int):
        fd = os.memfd_create("minifcn-split")
        here, there = socket.socketpair()
        try:
            os.ftruncate(fd, 2 * size)
            self.block = mmap.mmap(fd, 2 * size)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "minifcn.accel.split", str(there.fileno()), str(fd)],
                pass_fds=(there.fileno(), fd),
                stdin=subprocess.DEVNULL,
                env=_helper_environment(),
            )
        finally:
            os.close(fd)
            there.close()
        self.conn = Connection(here.detach())
        views = memoryview(self.block)
        self.weights = _views(views[:size], layout)
        self.grads = _views(views[size:], layout)
        self.conn.send((_replica_bytes(model), layout, size))

    def wait_ready(self, timeout: float) -> None:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"it was not ready after {timeout:.0f} s")
        reply = self.conn.recv()
        if reply[0] != "ready":
            raise RuntimeError(reply[1])

    def close(self) -> None:
        self.conn.close()  # the helper ends when its socket closes
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class BatchSplit:
    """Runs training steps as two halves (see the module); ``step`` is the whole job."""

    def __init__(self):
        self._helper: _Helper | None = None
        self._signature = None
        self._failed = False  # the helper could not start or was lost: no new one
        self._jobs = 0  # the number of the last job sent to the helper

    def step(self, model, loss_fn, x, labels) -> float:
        """Forward, loss and backward of the batch ``x`` (N >= 2 images), ``labels``
        (N, H, W): the gradients add into the parameters' and the batch's loss is
        returned, as ``loss_fn(model(x), labels)`` then ``model.backward(loss_fn.backward(),
        input_grad=False)`` would (up to rounding: the halves are summed apart)."""
        half_loss = SoftmaxCrossEntropy(loss_fn.ignore_index, reduction="sum")
        counted = int(np.count_nonzero(labels != loss_fn.ignore_index))
        divisor = max(counted, 1) if loss_fn.reduction == "mean" else 1
        scale, n = 1.0 / divisor, len(x)
        first, second = halves(n)
        drops = dropout_layers(model)
        states = [m.rng.bit_generator.state for m in drops]

        def second_here() -> float:  # from the generators' states the step began with
            for m, state in zip(drops, states):
                m.rng.bit_generator.state = state
            return run_half(model, drops, half_loss, x[second], labels[second], n, second, scale)

        threads = adapt_threads()
        params = list(model.parameters())
        helper = self._ready_helper(model, params, drops) if threads.threads >= 2 else None
        lent = threads.threads // 2  # the helper's threads
        if helper is not None:
            for shared, p in zip(helper.weights, params):
                np.copyto(shared, p.data)
            self._jobs += 1
            job = (
                self._jobs, x[second], labels[second], n, scale, loss_fn.ignore_index, states,
                model.training, [p.requires_grad for p in params], lent,
            )  # fmt: skip
            try:
                helper.conn.send(job)
            except OSError:
                self._lose(f"it ended (exit status {helper.proc.poll()})")
                helper = None
        if helper is None:
            loss = run_half(model, drops, half_loss, x[first], labels[first], n, first, scale)
            return (loss + second_here()) / divisor
        threads.lent = lent
        try:
            loss = run_half(model, drops, half_loss, x[first], labels[first], n, first, scale)
        finally:
            threads.lent = 0
        done, theirs = self._receive(helper)
        if not done:  # this process runs the second half itself (a data error is raised
            loss += second_here()  # here, as without the helper); else the helper goes
            self._lose(theirs)
            return loss / divisor
        second_loss, cpu_seconds = theirs
        threads.helper_cpu += cpu_seconds
        for p, grad in zip(params, helper.grads):
            if p.requires_grad:
                p.grad += grad
        return (loss + second_loss) / divisor

    def _receive(self, helper) -> tuple[bool, object]:
        """(True, (summed loss, CPU seconds)) of the helper's half, or (False, why not)."""
        while True:  # a reply to a job this process stopped waiting for (an exception in
            try:  # its own half, Ctrl-C) is passed over
                reply = helper.conn.recv()
            except (EOFError, OSError):
                return False, f"it ended (exit status {helper.proc.poll()})"
            if reply[1] == self._jobs:
                break
        if reply[0] == "error":
            return False, f"it failed: {reply[2]}"
        return True, (reply[2], reply[3])

    def _ready_helper(self, model, params, drops) -> _Helper | None:
        """The helper for this model, started (and waited for) if need be; None where
        there is none to have."""
        if self._failed or not hasattr(os, "memfd_create"):
            return None
        if not all(isinstance(m.rng, np.random.Generator) for m in drops):
            return None  # e.g. the ranks' global-batch draws: the halves stay here
        layout, size = _layout(params)
        signature = (id(model), repr(model), tuple(layout))
        if self._helper is not None and self._signature == signature:
            return self._helper
        self.close()
        try:
            helper = _Helper(model, layout, size)
            self._helper, self._signature = helper, signature
            helper.wait_ready(START_SECONDS)
        except Exception as err:  # noqa: BLE001 - any reason: said, and the halves stay here
            self._lose(f"it could not start ({type(err).__name__}: {err})")
            return None
        return helper

    def _lose(self, why: str) -> None:
        print(
            f"minifcn: the batch split's helper process stopped: {why}; "
            "this process runs both halves from now on (the same results, slower)",
            file=sys.stderr,
        )
        self._failed = True
        self.close()

    @property
    def helper_pid(self) -> int | None:
        return None if self._helper is None else self._helper.proc.pid

    def close(self) -> None:
        """End the helper process (a later step starts a new one if it can)."""
        helper, self._helper, self._signature = self._helper, None, None
        if helper is not None:
            helper.close()

    def __del__(self):  # a step no one holds any more lets its helper go
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the modules may be gone
            pass


def serve(conn: Connection, fd: int) -> None:
    """The helper's loop: the model once, then one half-step per message, until EOF."""
    from .cpu import keep_freed_memory

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    keep_freed_memory()
    try:
        payload, layout, size = conn.recv()
    except (EOFError, OSError):  # the main process went before it sent the model
        return
    block = mmap.mmap(fd, 2 * size)
    os.close(fd)
    views = memoryview(block)
    try:
        model = pickle.loads(payload)
        params = list(model.parameters())
        for p, w, g in zip(params, _views(views[:size], layout), _views(views[size:], layout)):
            p.data, p.grad = w, g
        drops = dropout_layers(model)
    except Exception as err:  # noqa: BLE001 - said to the main process, which goes on alone
        conn.send(("error", f"the model did not load here: {type(err).__name__}: {err}"))
        return
    try:
        conn.send(("ready",))
    except OSError:
        return
    threads = adapt_threads()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        number, x, labels, total, scale, ignore_index, states, training, flags, lent = job
        cpu = time.process_time()
        try:
            threads.fix(lent)
            model.train(training)
            for p, flag in zip(params, flags):
                p.requires_grad = flag
            for m, state in zip(drops, states):
                m.rng.bit_generator.state = state
            for p in params:
                p.grad[...] = 0
            rows = slice(total - len(x), total)
            loss_fn = SoftmaxCrossEntropy(ignore_index, reduction="sum")
            loss = run_half(model, drops, loss_fn, x, labels, total, rows, scale)
        except Exception as err:  # noqa: BLE001 - the main process reruns the half itself
            reply = ("error", number, f"{type(err).__name__}: {err}")
        else:
            reply = ("done", number, loss, time.process_time() - cpu)
        try:
            conn.send(reply)
        except OSError:  # the main process is gone: so is the reason to go on
            return


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
