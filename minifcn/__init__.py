"""minifcn: Fully Convolutional Networks from scratch in NumPy, on the GPU through CuPy.

The Python API (imported on first use, so ``import minifcn`` stays cheap)::

    model = minifcn.load("runs/fcn8s_folder/best.npz", device="cpu")
    mask = model.segment("photo.jpg")          # class ids, int32 (H, W)
    val = minifcn.datasets.folder("my_data", split="val")
    print(model.evaluate(val)["per_class_iu"])
"""

from . import accel as _accel  # noqa: F401  (registers the accelerated path with minifcn.dispatch)

__all__ = ["Segmenter", "datasets", "load"]


def __getattr__(name: str):
    if name in ("load", "Segmenter"):
        from . import api

        return getattr(api, name)
    if name == "datasets":
        from .data import datasets

        return datasets
    raise AttributeError(f"module 'minifcn' has no attribute {name!r}")
