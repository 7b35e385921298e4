"""Loading ImageNet VGG16 weights: where "fully connected" becomes "convolution".

The widely shared ``vgg16_weights.npz`` (converted from the Caffe/Keras model)
stores

* ``conv1_1_W`` ... ``conv5_3_W`` as (3, 3, in, out) (height, width, in, out),
  ``conv1_1_b`` ... as (out,);
* ``fc6_W`` (25088, 4096) where 25088 = 7*7*512 is pool5 flattened in
  (height, width, channel) order; ``fc7_W`` (4096, 4096); ``fc6_b``, ``fc7_b``;
* ``fc8_W``/``fc8_b``, ImageNet's 1000-way classifier, which FCN discards.

``fc6_W`` reshaped to (7, 7, 512, 4096) and transposed to (4096, 512, 7, 7) is
a 7x7 convolution computing exactly the same numbers on a 7x7 pool5 map, and
on a larger map it slides: the classifier becomes a dense predictor.
"""

from __future__ import annotations

from pathlib import Path

from minifcn.storage.npz import load_npz

from ..backend import get_array_module

VGG_CONVS = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]


def vgg16_state_from_npz(arrays: dict, fc6_kernel: int) -> dict:
    """Convert the npz layout into minifcn's ``state_dict`` layout (OIHW)."""
    state = {}
    for name in VGG_CONVS:
        for key in (f"{name}_W", f"{name}_b"):
            if key not in arrays:
                raise ValueError(f"VGG16 weights: missing key {key!r}")
        state[f"{name}.weight"] = arrays[f"{name}_W"].transpose(3, 2, 0, 1)
        state[f"{name}.bias"] = arrays[f"{name}_b"]
    w6 = arrays["fc6_W"]
    in_ch = state["conv5_3.weight"].shape[0]
    k = fc6_kernel
    if w6.shape[0] != k * k * in_ch:
        raise ValueError(
            f"VGG16 weights: fc6_W has {w6.shape[0]} inputs, expected {k}*{k}*{in_ch} = "
            f"{k * k * in_ch} for a {k}x{k} fc6 on {in_ch} channels"
        )
    # (k*k*C, F) in (h, w, c) order -> (F, C, k, k): the convolutionalisation.
    state["fc6.weight"] = w6.reshape(k, k, in_ch, -1).transpose(3, 2, 0, 1)
    state["fc6.bias"] = arrays["fc6_b"]
    w7 = arrays["fc7_W"]
    state["fc7.weight"] = w7.T.reshape(w7.shape[1], w7.shape[0], 1, 1)
    state["fc7.bias"] = arrays["fc7_b"]
    return state


def load_vgg16_npz(model, path) -> None:
    """Copy ImageNet VGG16 weights from ``path`` into ``model``'s backbone in place.

    Only the backbone (conv1_1 ... fc7) is touched; the score and upsampling
    layers keep their FCN initialisation. Shapes must match the model's
    configuration (``paper`` for the real VGG16 file).
    """
    path = Path(path)
    arrays, _ = load_npz(path)
    state = vgg16_state_from_npz(arrays, model.config.fc6_kernel)
    own = dict(model.named_parameters())
    for name, value in state.items():
        p = own[name]
        if tuple(value.shape) != tuple(p.data.shape):
            raise ValueError(
                f"{path}: {name} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(p.data.shape)} (is the model's configuration the right one?)"
            )
    for name, value in state.items():
        p = own[name]
        p.data[...] = get_array_module(p.data).asarray(value, dtype=p.data.dtype)
