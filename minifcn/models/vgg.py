"""The VGG16 backbone with its fully connected layers already turned into convolutions.

``add_vgg16`` puts the layers on a network object under the reference names
(conv1_1 ... conv5_3, pool1 ... pool5, fc6, fc7), so ``state_dict`` keys read
``conv1_1.weight``, ``fc6.weight`` and so on.
"""

from __future__ import annotations

from ..nn import Conv2d, Dropout, MaxPool2d, ReLU, Scale
from .config import VGGConfig


def add_vgg16(net, config: VGGConfig, rng) -> list:
    """Create the backbone layers as attributes of ``net``.

    conv1_1 has padding ``config.first_padding``; every other 3x3 conv has
    padding 1; each block ends in a 2x2/2 max pool in ceil mode; fc6 is a
    ``fc6_kernel`` x ``fc6_kernel`` conv without padding and fc7 a 1x1 conv,
    each followed by ReLU and Dropout(0.5).

    Returns:
        the layer names in the order the forward pass visits them.
    """
    order = []

    def add(name, layer):
        setattr(net, name, layer)
        order.append(name)

    if config.input_scale != 1.0:
        add("scale_data", Scale(config.input_scale))
    in_ch = 3
    for block, (width, n_convs) in enumerate(zip(config.widths, config.convs_per_block), 1):
        for i in range(1, n_convs + 1):
            padding = config.first_padding if (block, i) == (1, 1) else 1
            add(f"conv{block}_{i}", Conv2d(in_ch, width, 3, 1, padding, rng=rng))
            add(f"relu{block}_{i}", ReLU())
            in_ch = width
        add(f"pool{block}", MaxPool2d(2, 2, ceil_mode=True))
    fc = config.fc_channels
    add("fc6", Conv2d(in_ch, fc, config.fc6_kernel, rng=rng))
    add("relu6", ReLU())
    add("drop6", Dropout(0.5, rng=rng.integers(2**63)))
    add("fc7", Conv2d(fc, fc, 1, rng=rng))
    add("relu7", ReLU())
    add("drop7", Dropout(0.5, rng=rng.integers(2**63)))
    return order
