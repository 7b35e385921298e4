"""One way in, one way out: how a command runs as one rank of a job.

``with launched(argv) as comm:`` gives the block this process's communicator. For
a plain process it is ``SingleProcess`` and the block runs exactly as it would
without it. In a job of several ranks it first checks that every rank was
started with the same arguments and code, and then every way out of the block
ends the process here:

- finished: wait until every rank has finished (rank 0 may still be writing
  files), then return normally;
- any error (``SystemExit`` with its message, Ctrl-C or SIGTERM, a failing
  collective, an unexpected exception): print the one line, prefixed with the rank, tell the
  other ranks why (so they stop at their next collective instead of waiting out
  the timeout), wait a bounded time for every rank to get here (rank 0 saves
  first, as after Ctrl-C), and leave with the exit status, without the MPI
  shutdown that could wait forever on a dead rank.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback

from .communicator import CollectiveTimeout, from_environment, say
from .fingerprint import fingerprint
from .launch import DistributedError, placement

STOP_WAIT_AFTER_TIMEOUT_S = 60.0


@contextlib.contextmanager
def launched(argv=None):
    """This process's communicator for the block (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        comm = from_environment()
    except DistributedError as err:
        place = placement() if _placement_readable() else None
        prefix = f"[rank {place.rank}/{place.size}] " if place and place.size > 1 else ""
        raise SystemExit(f"{prefix}error: {err}") from None
    if comm.size == 1:
        yield comm
        return
    code, message = 0, None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's cancel: stop as after Ctrl-C
    try:
        comm.check_same_job(fingerprint(argv))
        yield comm
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        message = stop.code if isinstance(stop.code, str) else None
    except KeyboardInterrupt:
        code, message = 130, "interrupted"
    except DistributedError as err:
        code, message = 1, f"error: {err}"
    except BaseException as err:  # a bug: the traceback, and still no hang
        traceback.print_exc()
        code, message = 1, f"error: {type(err).__name__}: {err}"
    if code == 0:
        if comm.barrier("waiting for every rank to finish"):
            comm.close()
            return
        code, message = 1, f"error: {comm.failure or 'a rank did not finish'}"
    if message:
        say(comm, message)
    reason = stop_reason(code)
    comm.raise_alarm(message.removeprefix("error: ") if message else reason)
    timed_out = comm.failure is not None and comm.failure.startswith("timed out")
    comm.barrier(
        "waiting for every rank to stop",
        min(comm.timeout, STOP_WAIT_AFTER_TIMEOUT_S) if timed_out else None,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def stop_reason(code: int) -> str:
    """What a rank's exit status says: Ctrl-C, a signal (128 + n, as the train command
    exits on SIGTERM or SIGHUP), or a plain status."""
    if code == 130:
        return "interrupted (Ctrl-C)"
    if 128 < code < 128 + 65:
        try:
            return signal.Signals(code - 128).name
        except ValueError:
            pass
    return f"exit status {code}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _placement_readable() -> bool:
    try:
        placement()
    except DistributedError:
        return False
    return True


__all__ = ["CollectiveTimeout", "launched"]
