"""Small pieces the command-line entry points share."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from minifcn.backend import require_gpu


def ensure_device(device: str) -> None:
    """Exit with a clear message when ``--device gpu`` is asked for but cannot be used."""
    if device == "gpu":
        try:
            require_gpu()
        except RuntimeError as err:
            raise SystemExit(f"error: --device gpu: {err}") from None


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 is an error, never "the default")."""
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def finite_float(text: str) -> float:
    """argparse type: a finite number >= 0 (learning rates, momentum, weight decay)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def check_new_file(path, flag: str) -> None:
    """SystemExit before any work unless ``path`` can be created as a new file: it must
    not exist (nothing is overwritten) and its folder must exist and be writable."""
    path = Path(path)
    if path.exists():
        raise SystemExit(f"error: {path} exists; choose another {flag} path (nothing written)")
    folder = path.parent
    if not folder.is_dir():
        raise SystemExit(f"error: {flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SystemExit(f"error: {flag} {path}: folder {folder} is not writable")
