"""The paper's first idea: a classifier's fully connected layers are convolutions.

A classifier for fixed-size windows (convs, then flatten, then fully
connected layers) computes one score vector per window. Rewrite its first
fully connected layer as a convolution whose kernel covers the whole feature
map it used to flatten, and the later ones as 1x1 convolutions: on a window
of the original size nothing changes, but on a larger image the network now
slides, producing a heatmap of scores - one cell per window, computed at once
and sharing all the convolution work between overlapping windows.
"""

from __future__ import annotations

import numpy as np

from ..nn import Conv2d, Flatten, Linear, Sequential


def convolutionalize(classifier: Sequential, window: int) -> Sequential:
    """The fully convolutional twin of ``classifier``, sharing its weights' values.

    Args:
        classifier: Sequential(convs/pools/ReLUs ..., Flatten, Linear, ..., Linear).
        window: the (square) input side the classifier was built for.
    Returns:
        Sequential with Flatten dropped, the first Linear turned into a
        k x k Conv2d (k = the feature map side at Flatten) and each later
        Linear into a 1x1 Conv2d. On an (N, C, H, W) image it returns
        (N, classes, (H - window) / stride + 1, ...) scores, where stride is the
        product of the strides before Flatten.
    """
    layers = list(classifier)
    if not any(isinstance(m, Flatten) for m in layers):
        raise ValueError("convolutionalize: the classifier has no Flatten layer")
    first = layers[0]
    x = np.zeros((1, first.in_channels, window, window), dtype=first.weight.data.dtype)
    out, seen_flatten, first_fc = [], False, True
    for layer in layers:
        if isinstance(layer, Flatten):
            _, c, h, w = x.shape
            if h != w:
                raise ValueError(f"convolutionalize: feature map at Flatten is {h}x{w}, not square")
            seen_flatten = True
            continue
        if not seen_flatten:
            x = layer(x)
            out.append(layer)
        elif isinstance(layer, Linear):
            k = x.shape[2] if first_fc else 1
            in_ch = layer.in_features // (k * k)
            conv = Conv2d(in_ch, layer.out_features, k, bias=layer.bias is not None)
            # Flatten is C-major (c*k*k + y*k + x), so a plain reshape lines up.
            conv.weight.data = layer.weight.data.reshape(layer.out_features, in_ch, k, k).copy()
            conv.weight.grad = np.zeros_like(conv.weight.data)
            if layer.bias is not None:
                conv.bias.data = layer.bias.data.copy()
                conv.bias.grad = np.zeros_like(conv.bias.data)
            out.append(conv)
            first_fc = False
        else:
            out.append(layer)  # ReLU, Dropout: pointwise, unchanged
    return Sequential(*out)


def window_stride(classifier: Sequential) -> int:
    """Product of the strides of the layers before Flatten: the heatmap's step in pixels."""
    stride = 1
    for layer in classifier:
        if isinstance(layer, Flatten):
            break
        stride *= getattr(layer, "stride", 1)
    return stride
