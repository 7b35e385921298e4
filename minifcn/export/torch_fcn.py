"""A PyTorch FCN with the reference layer names, for any minifcn configuration.

For training on in PyTorch what was started in minifcn: the exported safetensors file loads
into it with a plain ``load_state_dict`` (``strict=True``), and its forward pass is the same
computation as minifcn's. PyTorch is not a dependency of minifcn; this module imports it
only when called.

    from minifcn.export.torch_fcn import load_torch_fcn
    net = load_torch_fcn("model.safetensors")      # a torch.nn.Module, in eval mode

The layer names are the reference's (conv1_1 ... fc7, score_fr, score_pool4, upscore2, ...),
so the state_dict keys are those of minifcn's ``state_dict``; for the paper configuration
they are also those of the reference FCN's PyTorch port.
"""

from __future__ import annotations

import json

from ..models.config import get_config
from .common import ExportError, require

HEADS = ("fcn32s", "fcn16s", "fcn8s")


def build_torch_fcn(spec: dict, crop_offsets: dict):
    """A ``torch.nn.Module`` for ``spec`` (``FCN.spec()``), cropping at ``crop_offsets``.

    ``forward(x (N, 3, H, W)) -> scores (N, num_classes, H, W)``, x mean-subtracted as for
    minifcn. Weights are PyTorch's defaults until a state_dict is loaded.
    """
    torch = require("torch")
    nn = torch.nn
    cfg = get_config(spec["config"])
    head, c = spec["model"], spec["num_classes"]
    if head not in HEADS:
        raise ExportError(f"unknown model {head!r}; expected one of {', '.join(HEADS)}")
    offsets = {k: int(v) for k, v in crop_offsets.items()}
    at_once = head == "fcn8s" and spec.get("at_once", False)

    class TorchFCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = []  # (name, is_skip_source) in forward order
            in_ch = 3
            for block, (width, n) in enumerate(zip(cfg.widths, cfg.convs_per_block), 1):
                for i in range(1, n + 1):
                    pad = cfg.first_padding if (block, i) == (1, 1) else 1
                    self._add(f"conv{block}_{i}", nn.Conv2d(in_ch, width, 3, padding=pad))
                    self._add(f"relu{block}_{i}", nn.ReLU(inplace=True))
                    in_ch = width
                self._add(f"pool{block}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            fc = cfg.fc_channels
            self._add("fc6", nn.Conv2d(in_ch, fc, cfg.fc6_kernel))
            self._add("relu6", nn.ReLU(inplace=True))
            self._add("drop6", nn.Dropout2d())
            self._add("fc7", nn.Conv2d(fc, fc, 1))
            self._add("relu7", nn.ReLU(inplace=True))
            self._add("drop7", nn.Dropout2d())
            self.score_fr = nn.Conv2d(fc, c, 1)
            up = {"fcn32s": [("upscore", 64, 32)], "fcn16s": [("upscore2", 4, 2)]}
            up["fcn16s"].append(("upscore16", 32, 16))
            up["fcn8s"] = [("upscore2", 4, 2), ("upscore_pool4", 4, 2), ("upscore8", 16, 8)]
            if head != "fcn32s":
                self.score_pool4 = nn.Conv2d(cfg.widths[3], c, 1)
            if head == "fcn8s":
                self.score_pool3 = nn.Conv2d(cfg.widths[2], c, 1)
            for name, k, s in up[head]:
                layer = nn.ConvTranspose2d(c, c, k, stride=s, bias=False)
                layer.weight.requires_grad_(not spec.get("freeze_upsampling", False))
                setattr(self, name, layer)

        def _add(self, name, module):
            setattr(self, name, module)
            self.backbone.append(name)

        def forward(self, x):
            h, skips = x * cfg.input_scale if cfg.input_scale != 1.0 else x, {}
            for name in self.backbone:
                h = getattr(self, name)(h)
                if name in ("pool3", "pool4"):
                    skips[name] = h
            h = self.score_fr(h)
            if head == "fcn32s":
                return _crop(self.upscore(h), offsets["score"], x)
            h = self.upscore2(h)
            pool4 = skips["pool4"] * 0.01 if at_once else skips["pool4"]
            h = h + _crop(self.score_pool4(pool4), offsets["score_pool4c"], h)
            if head == "fcn16s":
                return _crop(self.upscore16(h), offsets["score"], x)
            h = self.upscore_pool4(h)
            pool3 = skips["pool3"] * 0.0001 if at_once else skips["pool3"]
            h = h + _crop(self.score_pool3(pool3), offsets["score_pool3c"], h)
            return _crop(self.upscore8(h), offsets["score"], x)

    return TorchFCN()


def _crop(x, offset: int, ref):
    h, w = ref.shape[2:]
    return x[:, :, offset : offset + h, offset : offset + w]


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
