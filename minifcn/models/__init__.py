"""FCN-32s / 16s / 8s on a VGG16 backbone."""

from .config import MINI, PAPER, VGGConfig, get_config
from .fcn import FCN, FCN8s, FCN16s, FCN32s, build_model, model_from_spec

__all__ = [
    "FCN",
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "MINI",
    "PAPER",
    "VGGConfig",
    "build_model",
    "get_config",
    "model_from_spec",
]
