"""Layers with hand-written backward passes, one concept per file."""

from .conv import Conv2d, conv2d, conv2d_input_grad, conv2d_weight_grad
from .conv_transpose import ConvTranspose2d
from .crop import Crop
from .dropout import Dropout
from .flatten import Flatten
from .fuse import Fuse
from .im2col import col2im, im2col
from .init import bilinear_kernel, bilinear_weight
from .linear import Linear
from .loss import SoftmaxCrossEntropy
from .module import Module
from .parameter import Parameter
from .pool import MaxPool2d
from .relu import ReLU
from .scale import Scale
from .sequential import Sequential

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "Crop",
    "Dropout",
    "Flatten",
    "Fuse",
    "Linear",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Scale",
    "Sequential",
    "SoftmaxCrossEntropy",
    "bilinear_kernel",
    "bilinear_weight",
    "col2im",
    "conv2d",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "im2col",
]
