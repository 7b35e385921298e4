"""A PyTorch FCN with the reference layer names, built from ``model.graph()``.

One builder, ``torch_fcn(model)``, turns each step of a minifcn network's graph into the
PyTorch layer of the same kind and name and runs the steps in the same order, so the PyTorch
network cannot drift from minifcn's: the exporter (``load_torch_fcn``) and the benchmark's
PyTorch side (``python -m minifcn.bench``) both use it. PyTorch is not a dependency of
minifcn; this module imports it only when called.

    from minifcn.export.torch_fcn import load_torch_fcn
    net = load_torch_fcn("model.safetensors")      # a torch.nn.Module, in eval mode

The layer names are the reference's (conv1_1 ... fc7, score_fr, score_pool4, upscore2, ...),
so the state_dict keys are those of minifcn's ``state_dict``; for the paper configuration
they are also those of the reference FCN's PyTorch port. An exported safetensors file loads
into it with a plain ``load_state_dict`` (``strict=True``).

Adding a layer type to minifcn means adding its PyTorch counterpart to ``TORCH_LAYERS``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from types import SimpleNamespace

from ..backend import as_numpy
from ..models.fcn import model_from_spec
from ..nn import Conv2d, ConvTranspose2d, Crop, Dropout, Fuse, MaxPool2d, ReLU, Scale
from .common import ExportError, require


@lru_cache(maxsize=1)
def _torch_modules():
    """The PyTorch modules minifcn's Scale, Crop and Fuse become (torch has none of them),
    and the network that runs a graph. Defined on first use: torch is imported only here."""
    torch = require("torch")
    tnn = torch.nn

    class TorchScale(tnn.Module):
        def __init__(self, factor: float):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    class TorchCrop(tnn.Module):
        def __init__(self, offset):
            super().__init__()
            self.offset = tuple(offset)

        def forward(self, x, ref):
            (oy, ox), (h, w) = self.offset, ref.shape[2:]
            return x[:, :, oy : oy + h, ox : ox + w]

    class TorchFuse(tnn.Module):
        def forward(self, a, b):
            return a + b

    class TorchFCN(tnn.Module):
        """Runs ``steps`` (minifcn's graph) over submodules named after the layers; each
        blob is dropped after its last reader, as minifcn's ``FCN.forward`` does."""

        def __init__(self, steps, layers: dict):
            super().__init__()
            self.steps = [tuple(s) for s in steps]
            for name, module in layers.items():
                self.add_module(name, module)
            self.last_use = {}
            for i, (_, _, src, *ref) in enumerate(self.steps):
                self.last_use.update({blob: i for blob in (src, *ref)})

        def forward(self, x):
            blobs = {"data": x}
            for i, (out, layer, src, *ref) in enumerate(self.steps):
                blobs[out] = getattr(self, layer)(blobs[src], *(blobs[r] for r in ref))
                for blob in (src, *ref):
                    if self.last_use[blob] == i:
                        del blobs[blob]
            return blobs[self.steps[-1][0]]

    return SimpleNamespace(Scale=TorchScale, Crop=TorchCrop, Fuse=TorchFuse, FCN=TorchFCN)


def _conv(tnn, m):
    return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                      bias=m.bias is not None)  # fmt: skip


def _conv_transpose(tnn, m):
    return tnn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                               m.padding, bias=m.bias is not None)  # fmt: skip


def _max_pool(tnn, m):
    return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)


# minifcn layer type -> its PyTorch counterpart, from (torch.nn, the minifcn layer).
# Dropout is elementwise in minifcn, so it is nn.Dropout (not Dropout2d) here.
TORCH_LAYERS = {
    Conv2d: _conv,
    ConvTranspose2d: _conv_transpose,
    MaxPool2d: _max_pool,
    ReLU: lambda tnn, m: tnn.ReLU(),
    Dropout: lambda tnn, m: tnn.Dropout(m.p),
    Scale: lambda tnn, m: _torch_modules().Scale(m.factor),
    Crop: lambda tnn, m: _torch_modules().Crop(m.offset),
    Fuse: lambda tnn, m: _torch_modules().Fuse(),
}


def torch_layer(layer, copy_weights: bool = True):
    """The PyTorch module computing what the minifcn ``layer`` computes; its weight and bias
    copied (``copy_weights``) and frozen where minifcn's are. ExportError for a layer type
    without a counterpart in ``TORCH_LAYERS``."""
    torch = require("torch")
    make = TORCH_LAYERS.get(type(layer))
    if make is None:
        raise ExportError(f"no PyTorch counterpart for minifcn layer type {type(layer).__name__}")
    module = make(torch.nn, layer)
    for name in ("weight", "bias"):
        ours = getattr(layer, name, None)
        if ours is not None:
            theirs = getattr(module, name)
            if copy_weights:  # in our dtype: a float64 model gives a float64 module
                theirs.data = torch.from_numpy(as_numpy(ours.data).copy())
            theirs.requires_grad_(ours.requires_grad)
    return module


def torch_fcn(model, device="cpu", copy_weights: bool = True):
    """A ``torch.nn.Module`` computing the same function as the minifcn network ``model``.

    One submodule per step of ``model.graph()``, under the layer's name (so the state_dict
    keys are ``model.state_dict()``'s), run in the graph's order. ``forward(x (N, 3, H, W))
    -> scores (N, num_classes, H, W)``, x mean-subtracted as for minifcn. Weights are copied
    from ``model``, in its dtype, unless ``copy_weights=False`` (then PyTorch's initial
    weights, float32); on ``device`` (a torch device or its name).
    """
    steps = model.graph()
    layers = {layer: torch_layer(getattr(model, layer), copy_weights) for _, layer, *_ in steps}
    return _torch_modules().FCN(steps, layers).to(device)


def build_torch_fcn(spec: dict, crop_offsets: dict):
    """The PyTorch network for ``spec`` (``FCN.spec()``): ``torch_fcn`` of the minifcn model
    the spec describes, with minifcn's initial weights until a state_dict is loaded.

    ``crop_offsets`` (as stored beside the spec) must be the ones the geometry gives for that
    spec; otherwise the file and this version of minifcn disagree and ExportError says so.
    """
    try:
        model = model_from_spec(spec)
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(f"cannot build a network from the spec {spec!r}: {err}") from None
    given = {k: int(v) for k, v in crop_offsets.items()}
    if given != model.crop_offsets:
        raise ExportError(
            f"crop offsets {given} differ from the {model.crop_offsets} the geometry gives for "
            f"this {spec['model']}"
        )
    return torch_fcn(model)


def load_torch_fcn(path):
    """Build the PyTorch FCN described in an exported safetensors file and load its weights
    with ``load_state_dict`` (strict). Returns the network in eval mode."""
    st_torch = require("safetensors.torch")
    safetensors = require("safetensors")
    with safetensors.safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    if "minifcn.spec" not in meta:
        raise ExportError(f"{path} has no minifcn.spec metadata; it was not exported by minifcn")
    spec, offsets = json.loads(meta["minifcn.spec"]), json.loads(meta["minifcn.crop_offsets"])
    net = build_torch_fcn(spec, offsets)
    net.load_state_dict(st_torch.load_file(str(path)))
    return net.eval()
