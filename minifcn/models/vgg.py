"""The VGG16 backbone with its fully connected layers already turned into convolutions.

``vgg16_layers`` lists the layers under the reference names (conv1_1 ...
conv5_3, pool1 ... pool5, fc6, fc7); the FCN puts them on itself under those
names, so ``state_dict`` keys read ``conv1_1.weight``, ``fc6.weight`` and so on.
"""

from __future__ import annotations

from ..nn import Conv2d, Dropout, MaxPool2d, ReLU, Scale
from .config import VGGConfig


def vgg16_layers(config: VGGConfig, rng) -> list:
    """The backbone as a list of (name, layer), in the order the forward pass visits them.

    conv1_1 has padding ``config.first_padding``; every other 3x3 conv has
    padding 1; each block ends in a 2x2/2 max pool in ceil mode; fc6 is a
    ``fc6_kernel`` x ``fc6_kernel`` conv without padding and fc7 a 1x1 conv,
    each followed by ReLU and Dropout(0.5). Each layer reads the one before it.
    """
    layers = []
    if config.input_scale != 1.0:
        layers.append(("scale_data", Scale(config.input_scale)))
    in_ch = 3
    for block, (width, n_convs) in enumerate(zip(config.widths, config.convs_per_block), 1):
        for i in range(1, n_convs + 1):
            padding = config.first_padding if (block, i) == (1, 1) else 1
            layers.append((f"conv{block}_{i}", Conv2d(in_ch, width, 3, 1, padding, rng=rng)))
            layers.append((f"relu{block}_{i}", ReLU()))
            in_ch = width
        layers.append((f"pool{block}", MaxPool2d(2, 2, ceil_mode=True)))
    fc = config.fc_channels
    layers += [
        ("fc6", Conv2d(in_ch, fc, config.fc6_kernel, rng=rng)),
        ("relu6", ReLU()),
        ("drop6", Dropout(0.5, rng=rng.integers(2**63))),
        ("fc7", Conv2d(fc, fc, 1, rng=rng)),
        ("relu7", ReLU()),
        ("drop7", Dropout(0.5, rng=rng.integers(2**63))),
    ]
    return layers
