"""Running an exported ONNX model with onnxruntime, as ``predict`` runs a checkpoint.

import numpy as np
from PIL import Image
from minifcn.export import segment_image_onnx

mask = segment_image_onnx("model.onnx", np.asarray(Image.open("image.png").convert("RGB")))
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..data.transforms import VGG_MEAN_RGB, normalize
from .common import ExportError, default_size, parse_ranges, require


def onnx_session(model):
    """An onnxruntime CPU session for a ``.onnx`` path, bytes or ``onnx.ModelProto``;
    a session passes through."""
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    if not isinstance(model, (str, os.PathLike, bytes)):
        return model
    ort = require("onnxruntime")
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise ExportError(f"ONNX model not found: {model}")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime has exception types of its own
        what = "the model" if isinstance(model, bytes) else model
        raise ExportError(f"onnxruntime cannot load {what}: {str(err).strip()}") from None


def _metadata(session) -> dict:
    return dict(session.get_modelmeta().custom_metadata_map)


def next_side(session, side: int) -> int:
    """The smallest side >= ``side`` that the exported model accepts (from its metadata)."""
    meta = _metadata(session)
    text = meta.get("minifcn.supported_sides")
    if text is None:  # not a minifcn export: try the size as it is
        return side
    for lo, hi in parse_ranges(text):
        if side <= hi:
            return max(side, lo)
    if side > int(meta.get("minifcn.sides_listed_up_to", 0)):
        return side  # beyond the list: onnxruntime itself refuses a size that does not fit
    raise ExportError(f"this model cannot segment an image side of {side}; supported: {text}")


def predict_onnx(model, images) -> np.ndarray:
    """Class scores (N, C, H, W) from an exported model for mean-subtracted images (N, 3, H, W).

    ``model``: a path to an ``.onnx`` file or an onnxruntime session. Sides the model does
    not accept are padded with zeros (the mean) up to the next supported side and the scores
    cropped back, as ``minifcn.commands.predict`` does.
    """
    session = onnx_session(model)
    images = np.asarray(images, dtype=np.float32)
    n, _, h, w = images.shape
    ph, pw = next_side(session, h), next_side(session, w)
    if (ph, pw) != (h, w):
        padded = np.zeros((n, 3, ph, pw), dtype=np.float32)
        padded[:, :, :h, :w] = images
        images = padded
    feed = {session.get_inputs()[0].name: images}
    return session.run(None, feed)[0][:, :, :h, :w]


def segment_image_onnx(model, image) -> np.ndarray:
    """uint8 RGB image (H, W, 3) -> class ids int32 (H, W), with an exported ONNX model.

    The steps of ``minifcn.commands.predict``: subtract the mean stored in the file, pad to a
    supported size, run, crop back, take the arg-max over the classes.
    """
    session = onnx_session(model)
    mean = json.loads(_metadata(session).get("minifcn.mean_rgb", json.dumps(VGG_MEAN_RGB)))
    scores = predict_onnx(session, normalize(np.asarray(image), mean)[None])
    return scores[0].argmax(axis=0).astype(np.int32)


def compare_onnx(model, onnx_model, size=None, seed: int = 0) -> tuple[float, float]:
    """(max |onnxruntime(onnx_model)(x) - model(x)|, tolerance) for a random image x.

    ``onnx_model``: a path, session, bytes or ``onnx.ModelProto``. ``size`` (H, W) defaults
    to the first supported square side from 64 on. x is image-like: normal, standard
    deviation 60 (about that of mean-subtracted pixels). The tolerance is what float32 allows
    between two runtimes: 1e-4 of minifcn's largest |score| (at least 1e-5); the kernels sum
    in other orders (im2col and BLAS here, onnxruntime's own there), so the results agree
    this closely, not exactly.
    """
    session = onnx_session(onnx_model)
    size = size or default_size(model)
    x = (np.random.default_rng(seed).standard_normal((1, 3, *size)) * 60).astype(np.float32)
    model.eval()
    ours = np.asarray(model(x))
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
    if theirs.shape != ours.shape:
        raise ExportError(f"ONNX output has shape {theirs.shape}, minifcn's {ours.shape}")
    return float(np.abs(theirs - ours).max()), max(1e-4 * float(np.abs(ours).max()), 1e-5)
