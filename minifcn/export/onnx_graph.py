"""The ONNX graph of an FCN, built from ``model.graph()`` and the layer objects.

Each step of ``model.graph()``, (output blob, layer name, input blob[, reference blob]), becomes
the ONNX nodes for its layer's type; blobs keep their names as ONNX tensor names and
parameters their ``state_dict`` names as initializer names. See the package docstring for
the mapping, the opset and what is dynamic.
"""

from __future__ import annotations

import json

import numpy as np

from ..backend import as_numpy
from ..data.transforms import VGG_MEAN_RGB
from ..nn import Conv2d, ConvTranspose2d, Crop, Dropout, Fuse, MaxPool2d, ReLU, Scale
from .common import ExportError, layer, ranges, refuse_nonfinite, require

OPSET = 17
IR_VERSION = 8
SIDES_UP_TO = 2048  # supported input sides are listed in the metadata up to this length


class _Builder:
    """The nodes and initializers of the graph being built, and the blob -> tensor names."""

    def __init__(self, helper, model):
        self.helper, self.model = helper, model
        self.nodes, self.inits = [], []
        self.tensor = {"data": "data"}  # blob -> the ONNX tensor holding it

    def node(self, op, inputs, out, name, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def const(self, name, value, dtype=np.int64) -> str:
        self.inits.append((name, np.asarray(value, dtype=dtype)))
        return name

    def param(self, name, p) -> str:
        self.inits.append((name, np.ascontiguousarray(as_numpy(p.data), np.float32)))
        return name


def _window(m) -> dict:
    k, s, p = m.kernel_size, m.stride, m.padding
    return dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)


def _conv_like(op):
    def convert(g, name, m, inputs, out):
        params = [g.param(f"{name}.weight", m.weight)]
        if m.bias is not None:
            params.append(g.param(f"{name}.bias", m.bias))
        return g.node(op, [inputs[0], *params], out, name, **_window(m))

    return convert


def _max_pool(g, name, m, inputs, out):
    return g.node("MaxPool", inputs, out, name, **_window(m), ceil_mode=int(m.ceil_mode))


def _scale(g, name, m, inputs, out):
    if m.factor == 1.0:
        return inputs[0]  # the identity: no node
    return g.node("Mul", [inputs[0], g.const(f"{name}.factor", m.factor, np.float32)], out, name)


def _crop(g, name, m, inputs, out):
    """Slice ``x`` from the geometry's offset to offset + ref's (H, W), then pin that size.

    The offset comes from ``model.crop_offsets``. A Crop layer whose own offset disagrees
    (a hand-edited model) is refused rather than exported with either of the two.
    """
    offsets = getattr(g.model, "crop_offsets", {})
    if name not in offsets:
        raise ExportError(f"crop {name!r} has no computed offset in model.crop_offsets")
    off = int(offsets[name])
    if tuple(m.offset) != (off, off):
        raise ExportError(
            f"crop {name!r}: the layer's offset {tuple(m.offset)} differs from the offset "
            f"{off} computed from the geometry"
        )
    x, ref = inputs
    hw, ends, shape, cut = (f"{name}.{s}" for s in ("ref_hw", "ends", "shape", "slice"))
    starts, axes = g.const(f"{name}.starts", [off, off]), g.const(f"{name}.axes", [2, 3])
    g.node("Shape", [ref], hw, f"{name}.ref_hw", start=2, end=4)
    g.node("Add", [hw, starts], ends, f"{name}.ends")
    g.node("Slice", [x, starts, ends, axes], cut, name)
    # [0, 0] copies N and C. A Slice clamped by an unsupported input size fails here.
    g.node("Concat", [g.const(f"{name}.nc", [0, 0]), hw], shape, f"{name}.shape", axis=0)
    return g.node("Reshape", [cut, shape], out, f"{name}.check_size")


# minifcn layer type -> convert(builder, layer name, layer, input tensors, output name), which
# adds the layer's nodes and returns the tensor holding its output. Adding a layer type to
# minifcn means adding its ONNX form here (the package docstring lists the mapping).
ONNX_LAYERS = {
    Conv2d: _conv_like("Conv"),
    ConvTranspose2d: _conv_like("ConvTranspose"),
    ReLU: lambda g, name, m, inputs, out: g.node("Relu", inputs, out, name),
    MaxPool2d: _max_pool,
    Dropout: lambda g, name, m, inputs, out: inputs[0],  # the identity at inference
    Scale: _scale,
    Fuse: lambda g, name, m, inputs, out: g.node("Add", inputs, out, name),
    Crop: _crop,
}


def to_onnx(
    model, input_size: tuple[int, int] | None = None, meta: dict | None = None, check: bool = True
):
    """The model's inference graph as a checked ``onnx.ModelProto``.

    Args:
        model: an FCN: ``graph()``, ``crop_offsets``, ``spec()`` and the layers it names.
        input_size: (H, W) for a fixed-size graph; None (default) for dynamic H and W.
        meta: checkpoint metadata; its ``class_names`` are stored when present.
        check: run ``onnx.checker.check_model`` (full check, with shape inference).

    Raises ExportError for a layer type it does not know, a non-finite parameter, or a crop
    whose offset disagrees with the geometry; ValueError for an ``input_size`` the model
    cannot segment.
    """
    onnx = require("onnx")
    from onnx import helper

    refuse_nonfinite(model)
    if input_size is not None:
        for side in input_size:
            model.blob_sizes(int(side))  # ValueError naming the supported sizes
    g = _Builder(helper, model)
    output = _add_steps(g, model)
    proto = helper.make_model(
        _graph(helper, model, g.nodes, output, input_size),
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="minifcn",
        producer_version=_version(),
        doc_string=f"{model.name}, {model.config.name} backbone, exported by minifcn",
    )
    helper.set_model_props(proto, _metadata(model, meta))
    _write_initializers(helper, proto, g.inits)
    if check:
        onnx.checker.check_model(proto, full_check=True)
    return proto


def _add_steps(g: _Builder, model) -> str:
    """Convert every step of ``model.graph()``; returns the tensor of the one output blob."""
    steps = model.graph()
    consumed = {"data"}
    for out, name, src, *ref in steps:
        m = layer(model, name)
        convert = ONNX_LAYERS.get(type(m))
        if convert is None:
            raise ExportError(f"cannot export layer {name!r} of type {type(m).__name__}")
        consumed.update([src, *ref])
        g.tensor[out] = convert(g, name, m, [g.tensor[b] for b in (src, *ref)], out)
    outputs = [out for out, *_ in steps if out not in consumed]
    if len(outputs) != 1:
        raise ExportError(f"expected one output blob, found {outputs}")
    return g.tensor[outputs[0]]


def _graph(helper, model, nodes, output: str, input_size):
    """The GraphProto: the nodes between ``data`` (N, 3, H, W) and ``output`` (N, C, H, W)."""
    from onnx import TensorProto

    h, w = input_size if input_size is not None else ("H", "W")
    c = model.num_classes
    return helper.make_graph(
        nodes,
        f"minifcn_{model.name}_{model.config.name}",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, h, w])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", c, h, w])],
        doc_string=(
            f"data: mean-subtracted RGB image, float32 (N, 3, H, W); score: class scores "
            f"(N, {c}, H, W). Supported sides up to 256: {ranges(model.supported_sizes(256))}."
        ),
    )


def _metadata(model, meta: dict | None) -> dict:
    props = {
        "minifcn.spec": json.dumps(model.spec()),
        "minifcn.crop_offsets": json.dumps(model.crop_offsets),
        "minifcn.supported_sides": ranges(model.supported_sizes(SIDES_UP_TO)),
        "minifcn.sides_listed_up_to": str(SIDES_UP_TO),
        "minifcn.mean_rgb": json.dumps(list(VGG_MEAN_RGB)),
    }
    if meta and meta.get("class_names"):
        props["minifcn.class_names"] = json.dumps(list(meta["class_names"]))
    return props


def _write_initializers(helper, proto, inits) -> None:
    """Add the weights to ``proto`` in place: the paper's 0.5 GB is copied once."""
    for name, value in inits:
        tensor = proto.graph.initializer.add()
        tensor.name, tensor.data_type = name, helper.np_dtype_to_tensor_dtype(value.dtype)
        tensor.dims.extend(value.shape)
        tensor.raw_data = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()


def save_onnx(model, path, input_size=None, meta: dict | None = None):
    """Build the graph (``to_onnx``) and write it to ``path``."""
    onnx = require("onnx")
    onnx.save_model(to_onnx(model, input_size, meta), str(path))
    return path


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("minifcn")
    except Exception:  # running from a source tree that is not installed
        return "unknown"
