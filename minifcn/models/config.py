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
# for a 2-core CPU to train on 64x64 images in minutes. fc6 is 3x3 (still > 1,
# so FCN-16s and FCN-8s need real crops) and conv1_1 pads by 17 instead of 100:
# the least padding for which FCN-32s still covers the image (its crop offset
# comes out as 0) and FCN-8s accepts 64x64 inputs. Padding costs: every extra
# pixel of padding is computed by all of block 1 (17 instead of 32 made training
# 1.8x faster). Trained from scratch, so the input is scaled to about unit size.
MINI = VGGConfig(
    name="mini",
    widths=(8, 16, 32, 64, 64),
    fc_channels=128,
    fc6_kernel=3,
    first_padding=17,
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
