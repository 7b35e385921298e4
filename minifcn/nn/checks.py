"""Input validation shared by the layers: clear errors that name the problem."""

from __future__ import annotations


def check_nchw(x, layer: str, channels: int | None = None) -> None:
    """Raise ValueError unless ``x`` is (N, C, H, W) with ``channels`` channels."""
    if getattr(x, "ndim", None) != 4:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{layer}: expected input of shape (N, C, H, W), got shape {shape}")
    if min(x.shape[0], x.shape[2], x.shape[3]) < 1:
        raise ValueError(
            f"{layer}: expected a non-empty batch (N, H and W >= 1), got shape {tuple(x.shape)}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{layer}: expected {channels} input channels, got {x.shape[1]} "
            f"(input shape {tuple(x.shape)})"
        )


def check_float(x, layer: str) -> None:
    if x.dtype.kind != "f":
        raise ValueError(f"{layer}: expected a floating-point input, got dtype {x.dtype}")


def check_int_at_least(value, minimum: int, name: str, layer: str) -> int:
    """``value`` as an int, or ValueError unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{layer}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
