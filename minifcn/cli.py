"""Small pieces the command-line entry points share."""

from __future__ import annotations

from .backend import require_gpu


def ensure_device(device: str) -> None:
    """Exit with a clear message when ``--device gpu`` is asked for but cannot be used."""
    if device == "gpu":
        try:
            require_gpu()
        except RuntimeError as err:
            raise SystemExit(f"error: --device gpu: {err}") from None
