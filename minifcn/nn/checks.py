"""Input validation shared by the layers: clear errors that name the problem."""

from __future__ import annotations


def check_nchw(x, layer: str, channels: int | None = None) -> None:
    """Raise ValueError unless ``x`` is (N, C, H, W) with ``channels`` channels."""
    if getattr(x, "ndim", None) != 4:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{layer}: expected input of shape (N, C, H, W), got shape {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{layer}: expected {channels} input channels, got {x.shape[1]} "
            f"(input shape {tuple(x.shape)})"
        )


def check_float(x, layer: str) -> None:
    if x.dtype.kind != "f":
        raise ValueError(f"{layer}: expected a floating-point input, got dtype {x.dtype}")
