"""The ``state_dict`` as a safetensors file: reference names, PyTorch layouts, float32."""

from __future__ import annotations

import json

import numpy as np

from .common import refuse_nonfinite, require


def safetensors_metadata(model, meta: dict | None = None) -> dict:
    """The header's string metadata: ``format`` "pt" (what PyTorch tools look for), the model
    spec and crop offsets (what ``torch_fcn.load_torch_fcn`` rebuilds the network from)."""
    out = {
        "format": "pt",
        "minifcn.spec": json.dumps(model.spec()),
        "minifcn.crop_offsets": json.dumps(model.crop_offsets),
    }
    if meta and meta.get("class_names"):
        out["minifcn.class_names"] = json.dumps(list(meta["class_names"]))
    return out


def save_safetensors(model, path, meta: dict | None = None):
    """Write ``model.state_dict()`` to ``path`` with the safetensors NumPy API."""
    st = require("safetensors.numpy")
    refuse_nonfinite(model)
    state = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model.state_dict().items()}
    st.save_file(state, str(path), metadata=safetensors_metadata(model, meta))
    return path


def load_safetensors(path) -> tuple[dict, dict]:
    """(name -> NumPy array, metadata) from a safetensors file, without PyTorch."""
    safetensors = require("safetensors")
    state, meta = {}, {}
    with safetensors.safe_open(str(path), framework="numpy") as f:
        for key in f.keys():
            state[key] = f.get_tensor(key)
        meta = f.metadata() or {}
    return state, meta
