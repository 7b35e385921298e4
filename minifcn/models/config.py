"""Backbone configurations: the paper's VGG16 and a mini one that trains in minutes on a CPU.

Both are plain data fed to one builder (``vgg.vgg16_layers``); nothing else differs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class VGGConfig:
    """What varies between backbones.

    Attributes:
        widths: output channels of the five conv blocks (conv1_x ... conv5_x).
        convs_per_block: 3x3 convs in each block; VGG16 has (2, 2, 3, 3, 3).
        fc_channels: channels of fc6 and fc7 (4096 in VGG16).
        fc6_kernel: fc6's kernel size (7: VGG16's fc6 sees the 7x7 pool5 map).
        first_padding: conv1_1's padding (100 in the paper, so that any image
            size leaves a non-empty output after fc6 and the crops fit).
        input_scale: a constant the (0..255, mean-subtracted) image is multiplied
            by first. 1 for VGG16, whose ImageNet weights expect that range; a
            network trained from scratch learns faster on inputs of unit scale.
    """

    name: str
    widths: tuple = (64, 128, 256, 512, 512)
    convs_per_block: tuple = (2, 2, 3, 3, 3)
    fc_channels: int = 4096
    fc6_kernel: int = 7
    first_padding: int = 100
    input_scale: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VGGConfig:
        d = dict(d)
        return cls(
            **{**d, "widths": tuple(d["widths"]), "convs_per_block": tuple(d["convs_per_block"])}
        )


PAPER = VGGConfig(name="paper")

# The same five blocks, 13 convs and two "fully connected" convs, narrow enough
# for a 2-core CPU to train on 96x96 images in minutes. fc6 is 3x3 without
# padding, as VGG16's 7x7 fc6 has none: it trims one pool5 pixel on each side,
# and that shift is what lets the skip crops line up (with a 1x1 or a padded fc6,
# upscore2 would start before score_pool4 and no crop could align them). conv1_1
# pads by 26 instead of 100: for a 96x96 image pool5 is then 5x5 and score_fr
# 3x3, so FCN-32s has a (coarse) grid of scores instead of a single one; FCN-32s
# needs at least 17 (its crop offset is padding - 17) and FCN-8s's crops fit for
# 96 pixels. Padding costs: every pixel of it is computed by all of block 1.
# Trained from scratch, so the input is scaled to about unit size.
# ``python -m minifcn.explain --config mini --size 96`` prints the arithmetic.
MINI = VGGConfig(
    name="mini",
    widths=(8, 16, 32, 64, 64),
    fc_channels=128,
    fc6_kernel=3,
    first_padding=26,
    input_scale=1 / 64,
)

CONFIGS = {"paper": PAPER, "mini": MINI}


def get_config(config) -> VGGConfig:
    """A ``VGGConfig`` from itself, a name ("paper" | "mini") or a dict."""
    if isinstance(config, VGGConfig):
        return config
    if isinstance(config, dict):
        return VGGConfig.from_dict(config)
    if config not in CONFIGS:
        raise ValueError(f"unknown backbone config {config!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[config]
