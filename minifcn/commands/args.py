"""Small pieces the command-line entry points share: argument types with bounds, the
environment check, and the checks of output files before any work.

Every number a command takes goes through one of the types below, so a value that
is zero, negative, not finite, or absurdly large (one that would overflow or ask for
more memory than any machine has) ends in argparse's one-line error and exit status
2, never in a traceback from deep inside the library.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from minifcn.backend import environment_problem, require_gpu

# No count a command takes is meaningful beyond this: it bounds what argparse accepts
# before a specific limit (a memory budget, a tile side) is checked.
MAX_COUNT = 2**31 - 1
MAX_GIB = 2.0**20  # --max-memory: a million GiB is more than any machine has


def check_environment(environ=None) -> None:
    """SystemExit with one line when an environment variable this program's libraries
    read holds a value they do not accept (matplotlib's ``MPLBACKEND``), instead of an
    import traceback; the message lists the accepted values."""
    environ = os.environ if environ is None else environ
    problem = environment_problem(environ)  # MINIFCN_ACCEL, MINIFCN_THREADS, CUPY_TF32...
    if problem:
        raise SystemExit(f"error: {problem}")
    value = environ.get("MPLBACKEND")
    if not value or "matplotlib" in sys.modules:
        return
    try:
        import matplotlib  # noqa: F401  (it validates MPLBACKEND when imported)
    except ValueError as err:
        for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            del sys.modules[name]
        reason = str(err).split(": ", 1)[-1]
        raise SystemExit(
            f"error: environment variable MPLBACKEND={value!r} is not usable: {reason}. "
            "Unset it or set MPLBACKEND=Agg (minifcn only writes image files)"
        ) from None


def ensure_device(device: str) -> None:
    """Exit with a clear message when ``--device gpu`` is asked for but cannot be used."""
    if device == "gpu":
        try:
            require_gpu()
        except RuntimeError as err:
            raise SystemExit(f"error: --device gpu: {err}") from None


def _int_in(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text.strip()) if len(text) <= 40 else None
    except ValueError:
        value = None
    if value is None:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}")
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    if value > high:
        raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {value:,}")
    return value


def bounded_int(low: int, high: int):
    """argparse type: an integer in low..high (``int_type.__name__`` says which)."""
    what = "a positive integer" if low == 1 else f"an integer >= {low}"

    def check(text: str) -> int:
        return _int_in(text, low, high, what)

    check.__name__ = f"integer {low}..{high}"
    return check


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 is an error, never "the default"), at most
    ``MAX_COUNT``."""
    return _int_in(text, 1, MAX_COUNT, "a positive integer")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0, at most ``MAX_COUNT``."""
    return _int_in(text, 0, MAX_COUNT, "an integer >= 0")


def finite_float(text: str) -> float:
    """argparse type: a finite number >= 0 (learning rates, momentum, weight decay)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def memory_gib(text: str) -> float:
    """argparse type of ``--max-memory``: GiB, > 0 and at most ``MAX_GIB``, and at least
    one byte once converted (so the byte count is a finite, exact integer)."""
    value = positive_float(text)
    if value > MAX_GIB:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_GIB:g} GiB, got {text}")
    if value * 2**30 < 1:
        raise argparse.ArgumentTypeError(f"is less than one byte: {text} GiB")
    return value


def show_progress(stream=None) -> bool:
    """Progress bars only on a terminal: redirected to a file, a bar's carriage-return
    frames would fill the log, so commands print their summary lines only."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def check_fits(nbytes: int, what: str) -> None:
    """SystemExit before any work when ``what`` (e.g. "--train-size 10000000") would
    take ``nbytes`` of memory, more than half of this machine's."""
    from minifcn.storage.npz import memory_budget

    budget = memory_budget()
    if nbytes > budget:
        raise SystemExit(
            f"error: {what} needs about {nbytes / 2**30:.1f} GiB of memory, more than the "
            f"{budget / 2**30:.1f} GiB (half of this machine's memory) a run may take"
        )


def shapes_bytes(size: int, image_size: int = 96) -> int:
    """Memory of a generated shapes split: RGB image and label, 4 bytes a pixel, and
    the float32 copy a batch of it becomes is counted again."""
    return int(size) * int(image_size) ** 2 * 4 * 2


def check_new_file(path, flag: str, suffixes=None) -> None:
    """SystemExit before any work unless ``path`` can be created as a new file: it must
    not exist, not even as a broken link (nothing is overwritten), its folder must
    exist and be writable, and with ``suffixes`` (e.g. ``(".png",)``) its name must end
    in one of them, so that the name says what the file holds."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise SystemExit(
            f"error: {flag} {path}: the file is written as {suffixes[0][1:].upper()}; give it "
            f"a name ending in {' or '.join(suffixes)} (nothing written)"
        )
    if os.path.lexists(path):
        raise SystemExit(f"error: {path} exists; choose another {flag} path (nothing written)")
    folder = path.parent
    if not folder.is_dir():
        raise SystemExit(f"error: {flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SystemExit(f"error: {flag} {path}: folder {folder} is not writable")


def write_failed(path, err: OSError) -> SystemExit:
    """The one-line SystemExit for an output that could not be written (nothing of it
    is left: the project's writes go through temporaries)."""
    from minifcn.storage.atomic import describe_os_error

    if isinstance(err, FileExistsError):
        return SystemExit(f"error: {path} appeared while the command ran; it was not replaced")
    return SystemExit(f"error: cannot write {path}: {describe_os_error(err)}; nothing was written")


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None (JSON's null)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
