"""The Python API: load a trained model and segment images, evaluate it on a dataset.

    import minifcn

    model = minifcn.load("runs/fcn8s_folder/best.npz", device="cpu")
    mask = model.segment("photo.jpg")             # int32 (H, W) class ids, any image size
    print(model.class_names[mask[0, 0]])
    picture = model.overlay("photo.jpg", mask)    # uint8 (H, W, 3): the mask over the image

    val = minifcn.datasets.folder("my_data", split="val")
    scores = model.evaluate(val)                   # the four metrics and per-class IU by name

``segment`` does what ``python -m minifcn.predict`` does: it pads an image to
a size the network takes and crops the scores back, segments it in tiles
(with enough context that the result equals the whole-image one) when one
pass would need more than ``max_memory`` GiB, and runs on the model's device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minifcn.backend import require_gpu
from minifcn.data.files import read_image
from minifcn.data.palette import colorize, overlay
from minifcn.data.transforms import normalize
from minifcn.inference.engine import (
    evaluate,
    padded_forward_bytes,
    plan_tiles,
    predict_labels,
    segment_tiled,
)
from minifcn.models.checkpoint import load_model

DEFAULT_MAX_MEMORY = 2.0  # GiB a forward pass may use before tiling


def as_rgb(image) -> np.ndarray:
    """An image as uint8 RGB (H, W, 3): from a path, a PIL image, or an array that is
    uint8 (H, W, 3), (H, W, 4) (alpha dropped) or (H, W) (grey).

    Raises ValueError for anything else, saying what was expected."""
    if isinstance(image, (str, Path)):
        return read_image(Path(image))
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 pixels (0..255), got dtype {array.dtype}; convert first, e.g. "
            "(image * 255).round().astype('uint8') for values in 0..1"
        )
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[..., :3])
    raise ValueError(
        f"expected an image of shape (H, W, 3), (H, W, 4) or (H, W), got {array.shape}"
    )


def tile_for_budget(model, height: int, width: int, max_memory: float, tile=None, batch=1):
    """(tile side or None, note or None) for segmenting ``batch`` images of (height, width).

    None means one whole-image pass: its estimated memory fits ``max_memory`` GiB and
    no ``tile`` is forced. Otherwise the tile side (``engine.plan_tiles``) and, when it
    was chosen here, a note saying so. ValueError when the tiles do not fit."""
    chosen = plan_tiles(model, height, width, int(max_memory * 2**30), tile, batch)
    if tile is not None or chosen is None:
        return chosen, None
    need = padded_forward_bytes(model, height, width, batch)
    note = (
        f"{width}x{height} image: one pass would need about {need / 2**30:.1f} GiB, more "
        f"than --max-memory {max_memory:g}; segmenting in {chosen}x{chosen} tiles"
    )
    return chosen, note


class Segmenter:
    """A trained FCN with what it needs to segment images: returned by ``load``.

    Attributes:
        model: the network (``minifcn.models.FCN``).
        meta: the checkpoint's metadata (dataset, run arguments, ...).
        class_names: one name per class id.
        device: "cpu" or "gpu".
        max_memory: GiB one forward pass may use; larger images go in tiles.
        note: what the last ``segment`` call did that the caller may want to know
            (tiling), or None.
    """

    def __init__(self, model, meta: dict, device: str = "cpu", max_memory=DEFAULT_MAX_MEMORY):
        self.model, self.meta = model, dict(meta)
        names = self.meta.get("class_names") or []
        if len(names) != model.num_classes:
            names = [f"class_{i}" for i in range(model.num_classes)]
        self.class_names = tuple(names)
        self.max_memory = float(max_memory)
        self.note = None
        self.device = "cpu"
        self.to(device)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def to(self, device: str) -> Segmenter:
        """Move the weights to ``device`` ("cpu" or "gpu"); RuntimeError if no GPU is usable."""
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        if device == "gpu":
            require_gpu()
        self.model.to(device)
        self.device = device
        return self

    def segment(self, image, tile: int | None = None) -> np.ndarray:
        """Class ids int32 (H, W) of one image of any size (see ``as_rgb`` for the types).

        ``tile``: segment in tiles of this side (default: only when one pass would
        need more than ``max_memory`` GiB)."""
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        tile, self.note = tile_for_budget(self.model, h, w, self.max_memory, tile)
        self.model.eval()
        x = normalize(rgb)[None]
        if tile is None:
            return predict_labels(self.model, x, self.device)[0]
        return segment_tiled(self.model, x, self.device, tile)[0]

    def colorize(self, mask) -> np.ndarray:
        """A class-id mask (H, W) as colours, uint8 (H, W, 3) (the PASCAL VOC colour map)."""
        return colorize(mask)

    def overlay(self, image, mask=None, alpha: float = 0.5) -> np.ndarray:
        """The mask's colours over the image, uint8 (H, W, 3); ``mask`` defaults to
        ``segment(image)``."""
        rgb = as_rgb(image)
        return overlay(rgb, self.segment(rgb) if mask is None else mask, alpha)

    def predict_batch(self, images, device: str, tile: int | None = None):
        """Class ids of a batch float32 (N, 3, H, W), in tiles when one pass needs more
        than ``max_memory`` GiB (or of side ``tile`` when given)."""
        n, _, h, w = images.shape
        tile, _ = tile_for_budget(self.model, h, w, self.max_memory, tile, n)
        if tile is None:
            return predict_labels(self.model, images, device)
        return segment_tiled(self.model, images, device, tile)

    def evaluate(self, dataset, batch_size: int = 1, progress=None, tile=None) -> dict:
        """The four metrics over ``dataset`` from one confusion matrix, and the IU of each
        class by name: {"pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu",
        "per_class_iu": {name: IU, NaN where the class has no pixel}, "table": text}.
        ``tile``: segment every image in tiles of this side."""
        if dataset.num_classes != self.num_classes:
            raise ValueError(
                f"the model predicts {self.num_classes} classes but the dataset has "
                f"{dataset.num_classes}"
            )
        result = evaluate(
            self.model,
            dataset,
            batch_size,
            self.device,
            progress,
            predict=lambda _model, images, device: self.predict_batch(images, device, tile),
        )
        names = list(getattr(dataset, "class_names", None) or self.class_names)
        scores = {k: float(result[k]) for k in ("pixel_accuracy", "mean_accuracy", "mean_iu")}
        scores["fw_iu"] = float(result["fw_iu"])
        scores["per_class_iu"] = {name: float(v) for name, v in zip(names, result["per_class_iu"])}
        scores["table"] = result["metrics"].format_table()
        scores["pred_counts"] = result["pred_counts"]
        return scores

    def __repr__(self) -> str:
        return (
            f"Segmenter({self.model.name}, {self.model.config.name} backbone, "
            f"{self.num_classes} classes, device={self.device!r})"
        )


def load(path, device: str = "cpu", max_memory: float = DEFAULT_MAX_MEMORY) -> Segmenter:
    """The model in checkpoint ``path`` (a ``best.npz`` / ``last.npz`` of a run, or any
    ``.npz`` written by ``minifcn``), ready to segment on ``device``.

    Raises FileNotFoundError for a missing file and ValueError for a file that is
    not a usable model (damaged, not a model, or non-finite weights)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    model, meta = load_model(path)
    return Segmenter(model, meta, device, max_memory)
