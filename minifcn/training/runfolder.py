"""The run folder of ``minifcn.commands.train``: one owner at a time, saves that are all or nothing.

- ``RunFolder.open`` validates the folder (creatable, a folder, writable) and takes an
  exclusive lock on ``<folder>/.lock`` for the run's lifetime, so two runs can never
  write into one folder. Temporary files a killed process left behind are removed.
- ``RunFolder.commit`` saves several files as one unit: every new file is written
  to a temporary file and fsync-ed first; only then are they renamed into place,
  the checkpoint first, and the folder is fsync-ed. Ctrl-C (SIGINT) during a
  commit is held back until it has finished; an error before the renames
  removes the temporaries and leaves the previous files untouched.
- ``is_better``/``best_row``: the one rule for the best epoch (highest validation
  mean IU; ties go to the later epoch, the longer-trained weights).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

from minifcn.storage.atomic import fsync_dir, is_temporary, write_temp

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, the emptiness check remains
    fcntl = None

LOCK_NAME = ".lock"


class RunFolderError(Exception):
    """A run folder that cannot be used; the message says why."""


# --------------------------------------------------------------------- best epoch
def is_better(mean_iu: float, best_mean_iu: float | None) -> bool:
    """Does an epoch with validation ``mean_iu`` replace the best so far?

    The rule used by ``minifcn.commands.train`` for ``best.npz``: higher mean IU wins and
    ties go to the later epoch (equal mean IU, longer-trained weights).
    """
    return best_mean_iu is None or mean_iu >= best_mean_iu


def best_row(history: list[dict]) -> dict | None:
    """The row of ``history`` (one dict per epoch, as ``metrics.json``) that
    ``best.npz`` holds, by the rule of ``is_better``."""
    best = None
    for row in history:
        if best is None or is_better(row["mean_iu"], best["mean_iu"]):
            best = row
    return best


# --------------------------------------------------------------------- interrupts
@contextlib.contextmanager
def interrupts_deferred(reraise: bool = True):
    """Hold back SIGINT (Ctrl-C) inside the block; raise KeyboardInterrupt after it
    (or drop it, with ``reraise=False``). Nested blocks defer to the outermost one.

    Only the main thread can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or _deferring:
        yield  # not the main thread, or already inside a deferring block
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
        signal.signal(signal.SIGINT, previous)
    if caught and reraise:
        raise KeyboardInterrupt


_deferring: list = []


# --------------------------------------------------------------------- the folder
class RunFolder:
    """An opened, locked run folder. Use ``RunFolder.open(path)``; ``close()`` when done."""

    def __init__(self, path: Path, lock_fd: int | None, created: bool):
        self.path = path
        self._lock_fd = lock_fd
        self.created = created

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, path, create: bool = True) -> RunFolder:
        """Validate ``path`` and lock it; RunFolderError with one clear sentence if not usable."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"--out {path} is a file, not a folder; choose another --out")
        created = False
        if not path.exists():
            if not create:
                raise RunFolderError(f"run folder {path} does not exist")
            try:
                path.mkdir(parents=True)
                created = True
            except FileExistsError:
                pass
            except NotADirectoryError:
                raise RunFolderError(
                    f"cannot create run folder {path}: a part of that path is a file"
                ) from None
            except OSError as err:
                raise RunFolderError(
                    f"cannot create run folder {path}: {err.strerror or err}"
                ) from None
        fd = _lock(path)
        folder = cls(path, fd, created)
        try:
            folder.remove_temporaries()
        except OSError as err:
            folder.close()
            raise RunFolderError(f"run folder {path} is not writable: {err}") from None
        return folder

    def close(self, remove_if_unused: bool = False) -> None:
        """Release the lock. With ``remove_if_unused``, a folder this run created and
        never saved anything into is removed again."""
        if self._lock_fd is None:
            return
        if remove_if_unused and self.created and not self.run_files():
            with contextlib.suppress(OSError):
                (self.path / LOCK_NAME).unlink()
                self.path.rmdir()
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --------------------------------------------------------------- contents
    def run_files(self) -> list[str]:
        """Names in the folder other than the lock and leftover temporaries."""
        return sorted(
            p.name for p in self.path.iterdir() if p.name != LOCK_NAME and not is_temporary(p)
        )

    def remove_temporaries(self) -> list[str]:
        """Delete temporary files left by a killed run (we hold the lock, so none is live)."""
        gone = []
        for p in self.path.iterdir():
            if is_temporary(p) and p.is_file():
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
            fsync_dir(self.path)


def _lock(path: Path) -> int | None:
    lock = path / LOCK_NAME
    for _ in range(5):  # a finishing run may remove an unused folder between our steps
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise RunFolderError(f"cannot create run folder {path}: {err}") from None
            continue
        except OSError as err:
            raise RunFolderError(
                f"run folder {path} is not writable ({err.strerror or err}); choose another --out"
            ) from None
        if fcntl is None:
            return fd
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
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as err:
            os.close(fd)
            raise RunFolderError(f"run folder {path} is not writable ({err})") from None
        return fd
    raise RunFolderError(f"could not lock run folder {path}; try again")


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
