"""minifcn: Fully Convolutional Networks from scratch in NumPy, on the GPU through CuPy."""

from . import accel as _accel  # noqa: F401  (registers the accelerated path with minifcn.dispatch)
