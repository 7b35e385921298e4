"""The run folder of ``minifcn.commands.train``: one owner at a time, saves that are all or nothing.

- ``RunFolder.open`` validates the folder (creatable, a folder, writable) and takes an
  exclusive lock on ``<folder>/.lock`` for the run's lifetime, so two runs can never
  write into one folder. A run folder is marked by ``.minifcn-run``; only in a marked
  folder are the temporary files a killed run left behind removed, and only those
  this project names (``.last.npz.<8 hex digits>.tmp``, ...), never a link.
- Nothing is written through a link: ``.lock`` and the marker are opened with
  ``O_NOFOLLOW`` (a link there is refused, not followed), must be plain files with
  one name, and the lock is only rewritten when it holds a process id or nothing.
- A folder this run created (with every parent it created, ``a/b`` of ``--out
  a/b/c``) is removed again when the run saved nothing; in a folder that existed,
  the lock file and marker this run added are removed again.
- ``RunFolder.commit`` saves several files as one unit: every new file is written
  to a temporary file and fsync-ed first; only then are they renamed into place,
  the checkpoint first, and the folder is fsync-ed. Ctrl-C (SIGINT), and SIGTERM or
  SIGHUP where the run handles them, are held back until a commit has finished; an
  error before the renames removes the temporaries and leaves the previous files.
- ``is_better``/``best_row``: the one rule for the best epoch (highest validation
  mean IU; ties go to the later epoch, the longer-trained weights).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import threading
from pathlib import Path

from minifcn.storage.atomic import fsync_dir, is_plain_file, temporary_target, write_temp

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, the emptiness check remains
    fcntl = None

LOCK_NAME = ".lock"
MARKER_NAME = ".minifcn-run"
MARKER_TEXT = "minifcn run folder (written by python -m minifcn.train)\n"
# The files a run writes through temporaries; only their temporaries are ever removed.
RUN_FILE_NAMES = (
    "last.npz",
    "best.npz",
    "metrics.csv",
    "metrics.json",
    "curves.png",
    "predictions.png",
)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_PID_TEXT = re.compile(rb"^\d{0,20}\n?$")


class RunFolderError(Exception):
    """A run folder that cannot be used; the message says why."""


# --------------------------------------------------------------------- best epoch
def is_better(mean_iu: float, best_mean_iu: float | None) -> bool:
    """Does an epoch with validation ``mean_iu`` replace the best so far?

    The rule used by ``minifcn.commands.train`` for ``best.npz``: higher mean IU wins and
    ties go to the later epoch (equal mean IU, longer-trained weights). A NaN mean IU
    (no validation pixel had a label) never wins.
    """
    if mean_iu is None or mean_iu != mean_iu:
        return best_mean_iu is None
    return best_mean_iu is None or best_mean_iu != best_mean_iu or mean_iu >= best_mean_iu


def best_row(history: list[dict]) -> dict | None:
    """The row of ``history`` (one dict per epoch, as ``metrics.json``) that
    ``best.npz`` holds, by the rule of ``is_better``."""
    best = None
    for row in history:
        if best is None or is_better(row["mean_iu"], best["mean_iu"]):
            best = row
    return best


# --------------------------------------------------------------------- interrupts
DEFERRED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def interrupts_deferred(reraise: bool = True):
    """Hold back SIGINT (Ctrl-C) inside the block, and SIGTERM/SIGHUP where a Python
    handler is installed for them (the training run's); after the block, the first
    signal caught is delivered to its handler (Ctrl-C: KeyboardInterrupt), or dropped
    with ``reraise=False``. Nested blocks defer to the outermost one.

    Only the main thread can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or _deferring:
        yield  # not the main thread, or already inside a deferring block
        return
    caught: list[int] = []
    previous = {}
    for signum in DEFERRED_SIGNALS:
        handler = signal.getsignal(signum)
        if signum == signal.SIGINT or callable(handler):
            previous[signum] = signal.signal(signum, lambda n, frame: caught.append(n))
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if caught and reraise:
        handler = previous[caught[0]]
        if callable(handler):
            handler(caught[0], None)
        else:
            raise KeyboardInterrupt


_deferring: list = []


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, delivered as Ctrl-C is: the run saves where it stands and ends."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def signals_stop_the_run():
    """Inside the block, SIGTERM (what ``kill``, schedulers and containers send) and SIGHUP
    (a closed terminal) raise ``Stopped``, a KeyboardInterrupt, so they end a run as
    Ctrl-C does: the partial epoch is saved and the command exits with one line.
    Saves already under way finish first (``interrupts_deferred``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --------------------------------------------------------------------- the folder
class RunFolder:
    """An opened, locked run folder. Use ``RunFolder.open(path)``; ``close()`` when done."""

    def __init__(self, path: Path, lock_fd: int | None, created: bool):
        self.path = path
        self._lock_fd = lock_fd
        self.created = created  # this run made the folder
        self.made_parents: list[Path] = []  # ... and these parents of it, innermost first
        self.made_names: list[str] = []  # the lock file and marker this run added
        self.committed = False  # something was committed

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, path, create: bool = True) -> RunFolder:
        """Validate ``path`` and lock it; RunFolderError with one clear sentence if not usable.

        ``create``: make the folder (and its missing parents) if needed; a new run.
        Without it (``--resume``) the folder must exist.
        """
        path = Path(path)
        if os.path.lexists(path) and not path.exists():
            raise RunFolderError(f"--out {path} is a broken symbolic link; choose another --out")
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"--out {path} is a file, not a folder; choose another --out")
        made: list[Path] = []
        if not path.exists():
            if not create:
                raise RunFolderError(f"run folder {path} does not exist")
            made = _make_folders(path)
        folder = cls(path, None, path in made)
        folder.made_parents = [p for p in made if p != path]
        try:
            folder._lock_fd, made_lock = _lock(path)
            if made_lock:
                folder.made_names.append(LOCK_NAME)
            is_run = _is_run_folder(path, legacy_ok=not create)
            if not is_run and (create or is_run is None):
                if _write_marker(path):
                    folder.made_names.append(MARKER_NAME)
            if is_run:
                folder.remove_temporaries()
        except OSError as err:
            folder.close(remove_if_unused=True)
            raise RunFolderError(f"run folder {path} is not writable: {err}") from None
        except BaseException:
            folder.close(remove_if_unused=True)
            raise
        return folder

    def close(self, remove_if_unused: bool = False) -> None:
        """Release the lock. When nothing was saved, the lock file and marker this run
        added are removed; with ``remove_if_unused``, so are the folder and the parents
        this run created, if they are empty then."""
        if self._lock_fd is None and not self.made_names:
            return
        if not self.committed:
            for name in self.made_names:
                p = self.path / name
                if is_plain_file(p):
                    with contextlib.suppress(OSError):
                        p.unlink()
            self.made_names = []
            if remove_if_unused and self.created:
                for p in [self.path, *self.made_parents]:
                    try:
                        p.rmdir()  # only ever an empty folder
                    except OSError:
                        break
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --------------------------------------------------------------- contents
    def run_files(self) -> list[str]:
        """Names in the folder other than the lock, the marker and leftover temporaries
        of a run (in a folder that is not a run, every name counts: it is not empty)."""
        ours = {LOCK_NAME, MARKER_NAME}
        run = _is_run_folder(self.path)
        return sorted(
            p.name
            for p in self.path.iterdir()
            if p.name not in ours and not (run and _is_our_temporary(p))
        )

    def remove_temporaries(self) -> list[str]:
        """Delete the temporary files a killed run left behind (we hold the lock, so none
        is live): plain files named like a temporary of a file the run writes, in a
        folder marked as a run. Nothing else is touched."""
        gone = []
        if not _is_run_folder(self.path):
            return gone
        for p in self.path.iterdir():
            if _is_our_temporary(p):
                p.unlink()
                gone.append(p.name)
        return gone

    # ----------------------------------------------------------------- saving
    def commit(self, files: dict) -> None:
        """Replace several files as one unit. ``files``: name -> ``write(binary file)``,
        in the order of renaming (put the file that defines the state first).

        Every new file is complete and on disk before the first rename. SIGINT is
        held back until the commit is done. An exception while writing removes the
        temporaries and leaves every old file as it was.
        """
        temps: list[tuple[Path, Path]] = []
        with interrupts_deferred():
            try:
                for name, write in files.items():
                    target = self.path / name
                    temps.append((write_temp(target, write), target))
            except BaseException:
                for tmp, _ in temps:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                raise
            for tmp, target in temps:
                os.replace(tmp, target)
            self.committed = True
            fsync_dir(self.path)


def _is_our_temporary(p: Path) -> bool:
    return temporary_target(p) in RUN_FILE_NAMES and is_plain_file(p)


def _is_run_folder(path: Path, legacy_ok: bool = False) -> bool | None:
    """True when ``path`` holds the run marker (a plain file). Without one: None when
    ``legacy_ok`` and the folder holds a run's ``last.npz`` or ``best.npz`` (a run
    from before the marker existed), else False."""
    marker = path / MARKER_NAME
    if is_plain_file(marker):
        return True
    if os.path.lexists(marker):
        raise RunFolderError(
            f"{marker} is not a plain file (a link or a folder); refusing to use {path}"
        )
    if legacy_ok and any(is_plain_file(path / n) for n in ("last.npz", "best.npz")):
        return None
    return False


def _write_marker(path: Path) -> bool:
    """Create the marker (never through a link); False if it appeared meanwhile."""
    try:
        fd = os.open(path / MARKER_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(MARKER_TEXT)
    return True


def _make_folders(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; the ones this call created, innermost
    (``path``) first."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    made = []
    for p in reversed(missing):
        try:
            p.mkdir()
            made.append(p)
        except FileExistsError:
            if not p.is_dir():
                break
        except NotADirectoryError:
            _remove_empty(made)
            raise RunFolderError(
                f"cannot create run folder {path}: a part of that path is a file"
            ) from None
        except OSError as err:
            _remove_empty(made)
            raise RunFolderError(
                f"cannot create run folder {path}: {err.strerror or err}"
            ) from None
    if not path.is_dir():
        _remove_empty(made)
        raise RunFolderError(f"cannot create run folder {path}: a part of that path is a file")
    return made[::-1]


def _remove_empty(folders: list[Path]) -> None:
    for p in reversed(folders):
        with contextlib.suppress(OSError):
            p.rmdir()


def _open_lock(lock: Path) -> tuple[int, bool]:
    """(fd, created) of the lock file, never following a link."""
    base = os.O_RDWR | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
    try:
        return os.open(lock, base | os.O_CREAT | os.O_EXCL, 0o666), True
    except FileExistsError:
        pass
    try:
        return os.open(lock, base), False
    except OSError:
        if os.path.islink(lock):
            raise RunFolderError(
                f"{lock} is a symbolic link; a run never writes through a link (remove it "
                "or choose another --out)"
            ) from None
        raise


def _lock(path: Path) -> tuple[int | None, bool]:
    lock = path / LOCK_NAME
    for _ in range(5):  # a finishing run may remove an unused folder between our steps
        try:
            fd, created = _open_lock(lock)
        except FileNotFoundError:
            if not path.is_dir():
                raise RunFolderError(f"run folder {path} disappeared; try again") from None
            continue
        except OSError as err:
            raise RunFolderError(
                f"run folder {path} is not writable ({err.strerror or err}); choose another --out"
            ) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise RunFolderError(
                f"{lock} is not a plain file of its own (a "
                + ("file with other hard links" if stat.S_ISREG(info.st_mode) else "special file")
                + "); a run never writes into it: remove it or choose another --out"
            )
        if fcntl is None:
            return fd, created
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            raise RunFolderError(
                f"run folder {path} is in use by another training run"
                + (f" (process {holder})" if holder else "")
                + "; wait for it to finish or choose another --out"
            ) from None
        try:  # still the folder's lock file (not one removed after we opened it)?
            same = os.fstat(fd).st_ino == os.lstat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        if not created and not _PID_TEXT.match(os.pread(fd, 64, 0)):
            os.close(fd)
            raise RunFolderError(
                f"{lock} holds something other than a process id; it is not a minifcn lock "
                "file, so it is left alone: remove it or choose another --out"
            )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:
            os.close(fd)
            raise RunFolderError(f"run folder {path} is not writable ({err})") from None
        return fd, created
    raise RunFolderError(f"could not lock run folder {path}; try again")


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
