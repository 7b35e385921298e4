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
from .common import ExportError, check_finite, layer, ranges, require

OPSET = 17
IR_VERSION = 8
SIDES_UP_TO = 2048  # supported input sides are listed in the metadata up to this length


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
    from onnx import TensorProto, helper

    check_finite(model)
    if input_size is not None:
        for side in input_size:
            model.blob_sizes(int(side))  # ValueError naming the supported sizes
    nodes, inits = [], []

    def const(name, value, dtype=np.int64):
        inits.append((name, np.asarray(value, dtype=dtype)))
        return name

    def param(name, p):
        inits.append((name, np.ascontiguousarray(as_numpy(p.data), np.float32)))
        return name

    def conv_like(op, name, m, x, out, **extra):
        k, s, p = m.kernel_size, m.stride, m.padding
        inputs = [x, param(f"{name}.weight", m.weight)]
        if m.bias is not None:
            inputs.append(param(f"{name}.bias", m.bias))
        return helper.make_node(
            op, inputs, [out], name=name, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
            **extra,
        )  # fmt: skip

    steps = model.graph()
    tensor = {"data": "data"}  # blob -> the ONNX tensor holding it
    consumed = {"data"}
    for out, name, src, *ref in steps:
        m = layer(model, name)
        x = tensor[src]
        consumed.update([src, *ref])
        if isinstance(m, Conv2d):
            nodes.append(conv_like("Conv", name, m, x, out))
        elif isinstance(m, ConvTranspose2d):
            nodes.append(conv_like("ConvTranspose", name, m, x, out))
        elif isinstance(m, ReLU):
            nodes.append(helper.make_node("Relu", [x], [out], name=name))
        elif isinstance(m, MaxPool2d):
            k, s, p = m.kernel_size, m.stride, m.padding
            nodes.append(
                helper.make_node(
                    "MaxPool", [x], [out], name=name, kernel_shape=[k, k], strides=[s, s],
                    pads=[p] * 4, ceil_mode=int(m.ceil_mode),
                )
            )  # fmt: skip
        elif isinstance(m, Dropout) or (isinstance(m, Scale) and m.factor == 1.0):
            tensor[out] = x  # the identity at inference
            continue
        elif isinstance(m, Scale):
            factor = const(f"{name}.factor", m.factor, np.float32)
            nodes.append(helper.make_node("Mul", [x, factor], [out], name=name))
        elif isinstance(m, Fuse):
            nodes.append(helper.make_node("Add", [x, tensor[ref[0]]], [out], name=name))
        elif isinstance(m, Crop):
            nodes += _crop_nodes(helper, const, model, name, m, x, tensor[ref[0]], out)
        else:
            raise ExportError(f"cannot export layer {name!r} of type {type(m).__name__}")
        tensor[out] = out

    outputs = [out for out, *_ in steps if out not in consumed]
    if len(outputs) != 1:
        raise ExportError(f"expected one output blob, found {outputs}")
    h, w = input_size if input_size is not None else ("H", "W")
    c = model.num_classes
    graph = helper.make_graph(
        nodes,
        f"minifcn_{model.name}_{model.config.name}",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, h, w])],
        [helper.make_tensor_value_info(tensor[outputs[0]], TensorProto.FLOAT, ["N", c, h, w])],
        doc_string=(
            f"data: mean-subtracted RGB image, float32 (N, 3, H, W); score: class scores "
            f"(N, {c}, H, W). Supported sides up to 256: {ranges(model.supported_sizes(256))}."
        ),
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="minifcn",
        producer_version=_version(),
        doc_string=f"{model.name}, {model.config.name} backbone, exported by minifcn",
    )
    props = {
        "minifcn.spec": json.dumps(model.spec()),
        "minifcn.crop_offsets": json.dumps(model.crop_offsets),
        "minifcn.supported_sides": ranges(model.supported_sizes(SIDES_UP_TO)),
        "minifcn.sides_listed_up_to": str(SIDES_UP_TO),
        "minifcn.mean_rgb": json.dumps(list(VGG_MEAN_RGB)),
    }
    if meta and meta.get("class_names"):
        props["minifcn.class_names"] = json.dumps(list(meta["class_names"]))
    helper.set_model_props(proto, props)
    for name, value in inits:  # written into the model in place: the paper's 0.5 GB once
        tensor = proto.graph.initializer.add()
        tensor.name, tensor.data_type = name, helper.np_dtype_to_tensor_dtype(value.dtype)
        tensor.dims.extend(value.shape)
        tensor.raw_data = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
    if check:
        onnx.checker.check_model(proto, full_check=True)
    return proto


def _crop_nodes(helper, const, model, name, m, x, ref, out) -> list:
    """Slice ``x`` from the geometry's offset to offset + ref's (H, W), then pin that size.

    The offset comes from ``model.crop_offsets``. A Crop layer whose own offset disagrees
    (a hand-edited model) is refused rather than exported with either of the two.
    """
    offsets = getattr(model, "crop_offsets", {})
    if name not in offsets:
        raise ExportError(f"crop {name!r} has no computed offset in model.crop_offsets")
    off = int(offsets[name])
    if tuple(m.offset) != (off, off):
        raise ExportError(
            f"crop {name!r}: the layer's offset {tuple(m.offset)} differs from the offset "
            f"{off} computed from the geometry"
        )
    hw, ends, shape, cut = (f"{name}.{s}" for s in ("ref_hw", "ends", "shape", "slice"))
    starts, axes = const(f"{name}.starts", [off, off]), const(f"{name}.axes", [2, 3])
    return [
        helper.make_node("Shape", [ref], [hw], name=f"{name}.ref_hw", start=2, end=4),
        helper.make_node("Add", [hw, starts], [ends], name=f"{name}.ends"),
        helper.make_node("Slice", [x, starts, ends, axes], [cut], name=name),
        # [0, 0] copies N and C. A Slice clamped by an unsupported input size fails here.
        helper.make_node(
            "Concat", [const(f"{name}.nc", [0, 0]), hw], [shape], axis=0, name=f"{name}.shape"
        ),
        helper.make_node("Reshape", [cut, shape], [out], name=f"{name}.check_size"),
    ]


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
