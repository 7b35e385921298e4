"""How many threads NumPy's BLAS uses: its own default, a fixed count, or the idle cores.

The rule, and why:

* By default (``MINIFCN_THREADS`` unset) the BLAS keeps its own count, one thread
  per core. That count must not change during a run, nor between a run and its
  resume: OpenBLAS picks different kernels, and so different float32 summation
  orders, for different thread counts (conv1_1's weight gradient, a 64 x 27 output
  summed over ~86k pixels, differs in the last bit between 1 and 2 threads; a test
  shows it), so a seed's run is bit-reproducible only at a constant count.
* ``MINIFCN_THREADS=N`` fixes the count (1..1024): two trainings on a 2-core
  machine run best with ``MINIFCN_THREADS=1`` each.
* ``MINIFCN_THREADS=auto`` follows the idle cores: the cores this process may run
  on (``os.sched_getaffinity``) minus the cores other programs kept busy, read at
  the start from the load average and then every ``interval`` seconds from the
  machine's busy time (``/proc/stat``) minus this process's own CPU time. A BLAS
  product waits for its slowest thread, and OpenBLAS's threads spin while they
  wait, so on a shared machine fewer threads are faster. The price: the results'
  last bits then depend on the load, and ``--resume`` is exact only up to round-off.
* When ``MINIFCN_THREADS`` is unset and the user set ``OPENBLAS_NUM_THREADS``,
  ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``, that choice is kept as it is.

``threadpoolctl`` sets the limit on whichever BLAS NumPy loaded.
"""

from __future__ import annotations

import os
import time

from ..backend import AUTO_THREADS, requested_threads
from ..backend import THREADS_ENV as ENV

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def idle_cores(others_busy: float, cores: int) -> int:
    """Threads to use when other programs keep ``others_busy`` cores busy: the rest,
    rounded to the nearest core, at least 1 and at most ``cores``."""
    return max(1, min(cores, int(cores - others_busy + 0.5)))


class BlasThreads:
    """The BLAS thread limit of this process, chosen and kept up to date.

    ``start()`` sets the first limit; call ``adapt()`` as often as you like (every
    training step): it looks again only every ``interval`` seconds, and changes
    the limit only when the count of idle cores changed.
    """

    def __init__(self, interval: float = 2.0, environ=None):
        environ = os.environ if environ is None else environ
        self._blas_env = {v: environ[v] for v in BLAS_ENV if environ.get(v)}
        requested = requested_threads(environ)
        self.auto = requested == AUTO_THREADS
        self.fixed = requested if isinstance(requested, int) else None
        self.inherited = requested is None  # the BLAS's own count, or what the user set
        self.interval = interval
        self.cores = usable_cores()
        self.threads: int | None = None
        self.others_busy: float | None = None  # cores other programs used, last interval
        self._controller = None
        self._mark = None

    @property
    def adaptive(self) -> bool:
        return self.auto

    def describe(self) -> str:
        if self.fixed is not None:
            return f"{self.threads} (fixed by {ENV})"
        if self.inherited and self._blas_env:
            return f"{self.threads}, as set by " + ", ".join(
                f"{k}={v}" for k, v in self._blas_env.items()
            )
        if self.inherited:
            return f"{self.threads}, the BLAS default ({ENV}=N fixes it, =auto follows idle cores)"
        return f"{self.threads} of {self.cores} (as many as are idle: {ENV}=auto)"

    def start(self) -> BlasThreads:
        if self.inherited:  # not ours to change: note what the BLAS runs with
            self.threads = self._current()
        if self.fixed is not None:
            self._set(self.fixed)
        elif self.adaptive:
            try:
                load = os.getloadavg()[0]
            except (AttributeError, OSError):
                load = 0.0
            self.others_busy = load
            self._set(idle_cores(load, self.cores))
        self._mark = (time.monotonic(), _busy_seconds(), time.process_time())
        return self

    def adapt(self) -> None:
        """Re-count the idle cores if ``interval`` seconds passed, and follow them."""
        if not self.adaptive or self._mark is None:
            return
        now = time.monotonic()
        then, busy_then, ours_then = self._mark
        if now - then < self.interval:
            return
        busy, ours = _busy_seconds(), time.process_time()
        self._mark = (now, busy, ours)
        if busy is None or busy_then is None:
            return
        self.others_busy = max(0.0, (busy - busy_then) - (ours - ours_then)) / (now - then)
        self._set(idle_cores(self.others_busy, self.cores))

    def _controller_(self):
        if self._controller is None:
            from threadpoolctl import ThreadpoolController

            self._controller = ThreadpoolController()
        return self._controller

    def _current(self) -> int | None:
        """The thread count NumPy's BLAS runs with now (None when none is loaded)."""
        counts = [lib["num_threads"] for lib in self._controller_().select(user_api="blas").info()]
        return max(counts) if counts else None

    def _set(self, threads: int) -> None:
        if threads == self.threads:
            return
        self._controller_().limit(limits=threads, user_api="blas")
        self.threads = threads


_PROCESS: BlasThreads | None = None


def adapt_threads() -> BlasThreads:
    """This process's BLAS threads: chosen on the first call, kept up to date on each
    later one (the training loop calls it every step; it costs a clock read)."""
    global _PROCESS
    if _PROCESS is None:
        _PROCESS = BlasThreads().start()
    else:
        _PROCESS.adapt()
    return _PROCESS
