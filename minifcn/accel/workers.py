"""The accelerated CPU path's threads: a layer's work cut into pieces, the pieces spread
over the cores.

Why not leave the parallelism to the BLAS's own threads:

* **The same bits for any thread count.** OpenBLAS may sum in another order for
  another thread count (it picks other kernels), so a result would depend on how
  many threads ran. Here the pieces are fixed by the shapes alone (an image, a band
  of rows, a group of images), never by the thread count; each piece runs the
  BLAS single-threaded (``minifcn.accel.threads`` pins it to one thread), and
  where pieces add up (a weight gradient) their partial sums are added in piece
  order. So 1, 2 or 16 threads give identical results, and the count may follow
  the machine's load without changing a run.
* **A shared machine.** A BLAS product waits for its slowest thread, and
  OpenBLAS's threads spin while they wait: when another program holds a core, a
  product stalls far beyond its share of the machine. Here an idle thread takes
  the next piece off a shared counter, so a thread the system pauses delays only
  its own piece, and a thread with nothing left to take sleeps instead of
  spinning.

NumPy lets go of the interpreter lock inside products, copies and arithmetic on
arrays, so the pieces run truly in parallel. A piece never starts pieces of its
own (``run`` inside a piece runs its pieces in that thread).
"""

from __future__ import annotations

import os
import threading

from .threads import adapt_threads

_INSIDE = threading.local()  # .piece: this thread is running a piece now


class _Job:
    """One ``run``: its pieces, the next one to hand out, the first error."""

    def __init__(self, piece, count: int):
        self.piece, self.count = piece, count
        self.next, self.error = 0, None
        self.lock = threading.Lock()

    def drain(self) -> None:
        """Run pieces until none is left (or one has failed), in this thread."""
        _INSIDE.piece = True
        try:
            while True:
                with self.lock:
                    i = self.next
                    if i >= self.count or self.error is not None:
                        return
                    self.next = i + 1
                try:
                    self.piece(i)
                except BaseException as err:
                    with self.lock:
                        if self.error is None:
                            self.error = err
                    return
        finally:
            _INSIDE.piece = False


class Workers:
    """``threads`` threads (the caller's among them) that run the pieces of one job.

    ``run(piece, count)`` calls ``piece(i)`` once for every i in range(count),
    each in whichever thread is free first, and returns when all have finished;
    the first exception a piece raised is raised again (the pieces not started
    by then are skipped).

    Each helper thread waits on a lock of its own, which ``run`` lets go of to start
    it, and lets go of another when it has drained the job: two lock handovers per
    helper and job, and no queue or future objects. The handovers still wake sleeping
    threads, which is what a job of empty pieces costs (``python -m minifcn.bench
    --scaling`` times it): hence PARALLEL_WORK. A second thread calling ``run`` while
    a job is under way runs its own pieces itself.
    """

    def __init__(self, threads: int):
        if threads < 1:
            raise ValueError(f"a worker pool needs at least 1 thread, not {threads}")
        self.threads = self.active = threads  # active: how many of them a job may use
        self._job: _Job | None = None
        self._closed = False
        self._busy = threading.Lock()  # held while a job is under way
        self._helpers = []  # (start, finished) locks, held while the helper has nothing to do
        for _ in range(threads - 1):
            start, finished = threading.Lock(), threading.Lock()
            start.acquire()
            finished.acquire()
            self._helpers.append((start, finished))
            threading.Thread(
                target=self._serve, args=(start, finished), name="minifcn-worker", daemon=True
            ).start()

    def _serve(self, start, finished) -> None:
        while True:
            start.acquire()
            if self._closed:
                return
            self._job.drain()
            finished.release()

    def run(self, piece, count: int) -> None:
        helpers = self._helpers[: min(self.active, count) - 1]
        if not helpers or getattr(_INSIDE, "piece", False) or not self._busy.acquire(False):
            for i in range(count):
                piece(i)
            return
        try:
            job = self._job = _Job(piece, count)
            for start, _ in helpers:
                start.release()
            job.drain()
            for _, finished in helpers:
                finished.acquire()
        finally:
            self._job = None
            self._busy.release()
        if job.error is not None:
            raise job.error

    def close(self) -> None:
        """Let the threads go (without waiting for them here)."""
        with self._busy:
            self._closed = True
            for start, _ in self._helpers:
                start.release()
            self._helpers = []


_WORKERS: Workers | None = None


def workers() -> Workers:
    """This process's pool, with as many threads as ``minifcn.accel.threads`` chose
    (made again when that choice changes)."""
    global _WORKERS
    state = adapt_threads()
    if _WORKERS is None or _WORKERS.threads != state.threads:
        old, _WORKERS = _WORKERS, Workers(state.threads)
        if old is not None:
            old.close()
    _WORKERS.active = state.pool_threads  # fewer while the batch split's helper runs
    return _WORKERS


def pool_threads() -> int:
    """The threads a job of the pool runs on now (fewer while the batch split's helper
    runs)."""
    return workers().active


PARALLEL_WORK = 2**22  # a piece of fewer multiply-adds (or values moved) runs in the caller


def run(piece, count: int, work: int | None = None) -> None:
    """``piece(i)`` for every i in range(count), on this process's threads; in the calling
    thread alone when each piece does less than PARALLEL_WORK (``work``: its multiply-adds,
    or values moved): handing small pieces between threads costs more than it saves. Which
    thread runs a piece never changes its result."""
    small = work is not None and work < PARALLEL_WORK
    if small or getattr(_INSIDE, "piece", False):  # a piece's own pieces stay in its thread
        for i in range(count):
            piece(i)
        return
    workers().run(piece, count)


def blocks(size: int, count: int, least: int) -> list:
    """range(size) cut into ``count`` slices of equal length (the last may be shorter),
    fewer where a slice would be shorter than ``least``: the pieces of a layer's work."""
    count = max(1, min(count, size // max(1, least)))
    step = -(-size // count)
    return [slice(i, min(i + step, size)) for i in range(0, size, step)]


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: it makes its own pool."""
    global _WORKERS
    _WORKERS = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
