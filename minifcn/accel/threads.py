"""How many threads the accelerated CPU path runs on, and the BLAS pinned to one.

The rule, and why:

* The layers cut their work into pieces fixed by the shapes and run the pieces on
  a pool of threads (``minifcn.accel.workers``); each piece calls the BLAS
  single-threaded, so ``start()`` pins NumPy's BLAS to one thread (with
  ``threadpoolctl``, whichever BLAS NumPy loaded). The results are then the same
  bits for any thread count, and the count is free to follow the load.
* By default (``MINIFCN_THREADS`` unset, or ``auto``) the count follows the idle
  cores: the cores this process may run on (``os.sched_getaffinity``) minus the
  cores other programs kept busy, every ``interval`` seconds from the machine's
  busy time (``/proc/stat``, steal left out: ``_busy_seconds``) minus this process's
  own CPU time (every core until the first interval has passed). Two programs that
  each split their work over every core wait on each other's threads at every split;
  so beside another busy program, or a second training, the pool shrinks to the cores
  left.
* ``MINIFCN_THREADS=N`` fixes the count (1..1024).
* When ``MINIFCN_THREADS`` is unset and the user set ``OPENBLAS_NUM_THREADS``,
  ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` to a count, that count is the pool's,
  fixed.
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


def _cpu_ticks(path: str = "/proc/stat") -> list | None:
    """The machine's CPU time since boot in ticks, (user, nice, system, idle, iowait, irq,
    softirq, steal), from ``path``'s first line; None where it cannot be read."""
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return [int(v) for v in fields[1:9]]


def _busy_seconds(path: str = "/proc/stat") -> float | None:
    """CPU seconds the programs of this machine ran since boot (/proc/stat), or None.

    Steal is left out: it is the time a virtual machine's host ran other machines on this
    one's cores, not a program here. A thread that loses its core to the host delays only
    the piece it holds (the other threads take the rest), where a thread fewer would run
    every job on the fewer cores; so the pool keeps its threads under steal."""
    ticks = _cpu_ticks(path)
    if ticks is None:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, _steal = ticks
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def stolen_seconds(path: str = "/proc/stat") -> float | None:
    """CPU seconds the host of this virtual machine ran other machines on its cores since
    boot (/proc/stat's steal; 0 on a machine of its own), or None."""
    ticks = _cpu_ticks(path)
    return None if ticks is None else ticks[7] / os.sysconf("SC_CLK_TCK")


def idle_cores(others_busy: float, cores: int) -> int:
    """Threads to use when other programs keep ``others_busy`` cores busy: the rest,
    rounded to the nearest core, at least 1 and at most ``cores``."""
    return max(1, min(cores, int(cores - others_busy + 0.5)))


def _blas_setting(environ) -> tuple[str, int] | None:
    """The first of BLAS_ENV the user set to a thread count, as (name, count)."""
    for name in BLAS_ENV:
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) >= 1:
            return name, int(value)
    return None


class CpuThreads:
    """The thread count of this process's accelerated CPU path, chosen and kept up to date.

    ``start()`` pins the BLAS to one thread and sets the first count; call
    ``adapt()`` as often as you like (every training step): it looks again only
    every ``interval`` seconds, and only when the count is not fixed.
    """

    def __init__(self, interval: float = 2.0, environ=None):
        environ = os.environ if environ is None else environ
        requested = requested_threads(environ)
        self.fixed = requested if isinstance(requested, int) else None
        self.blas_setting = _blas_setting(environ) if requested is None else None
        self.auto = requested == AUTO_THREADS or (requested is None and not self.blas_setting)
        self.interval = interval
        self.cores = usable_cores()
        self.threads: int | None = None
        self.others_busy: float | None = None  # cores other programs used, last interval
        self.lent = 0  # of ``threads``, those the batch split's helper runs now (accel.split)
        self.helper_cpu = 0.0  # CPU seconds that helper spent: this program's, not another's
        self._controller = None
        self._mark = None

    @property
    def adaptive(self) -> bool:
        return self.auto

    def describe(self) -> str:
        if self.fixed is not None:
            return f"{self.threads} (fixed by {ENV})"
        if self.blas_setting is not None:
            return f"{self.threads}, as set by {self.blas_setting[0]}={self.blas_setting[1]}"
        return f"{self.threads} of {self.cores}, as many as are idle ({ENV}=N fixes the count)"

    def start(self) -> CpuThreads:
        self._controller_().limit(limits=1, user_api="blas")  # each piece runs the BLAS alone
        if self.fixed is not None:
            self.threads = self.fixed
        elif self.blas_setting is not None:
            self.threads = self.blas_setting[1]
        else:  # every core, until the first interval has measured what others use
            self.threads = self.cores
        self._mark = (time.monotonic(), _busy_seconds(), self.own_cpu())
        return self

    def own_cpu(self) -> float:
        """CPU seconds this program used: this process's and its batch-split helper's."""
        return time.process_time() + self.helper_cpu

    @property
    def pool_threads(self) -> int:
        """The threads of this process's pool: ``threads`` less those lent to the helper."""
        return max(1, self.threads - self.lent)

    def fix(self, threads: int) -> None:
        """Run on ``threads`` threads from now on (the batch split's helper: told each step)."""
        self.fixed = self.threads = max(1, int(threads))
        self.auto, self.blas_setting = False, None

    def adapt(self) -> None:
        """Re-count the idle cores if ``interval`` seconds passed, and follow them."""
        if not self.adaptive or self._mark is None:
            return
        now = time.monotonic()
        then, busy_then, ours_then = self._mark
        if now - then < self.interval:
            return
        busy, ours = _busy_seconds(), self.own_cpu()
        self._mark = (now, busy, ours)
        if busy is None or busy_then is None:
            return
        self.others_busy = max(0.0, (busy - busy_then) - (ours - ours_then)) / (now - then)
        self.threads = idle_cores(self.others_busy, self.cores)

    def _controller_(self):
        if self._controller is None:
            from threadpoolctl import ThreadpoolController

            self._controller = ThreadpoolController()
        return self._controller


_PROCESS: CpuThreads | None = None


def adapt_threads() -> CpuThreads:
    """This process's thread count: chosen on the first call (which pins the BLAS to one
    thread), kept up to date on later ones (every layer asks; it costs a clock read)."""
    global _PROCESS
    if _PROCESS is None:
        _PROCESS = CpuThreads().start()
    else:
        _PROCESS.adapt()
    return _PROCESS
