"""The exercise graders pass only what the learner wrote, and the notebooks' helpers work.

For every grader of minifcn.course.graders: the reference solution (notebooks/solutions/,
which the notebooks never import) passes; an unwritten stub is reported as "not written
yet"; plausible mistakes fail, including answers only slightly wrong (an off-by-one
padding, a missing bias, a transposed kernel, a result off by one part in 10^7); and an
answer that calls the library's own implementation of the graded operation fails with
"write it yourself", by whatever route it reaches it.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from minifcn.course import graders, teaching

SOLUTIONS = Path(__file__).resolve().parents[1] / "notebooks" / "solutions"


def load(name):
    spec = importlib.util.spec_from_file_location(f"solutions_{name}", SOLUTIONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nb01, nb02, nb03, nb04, nb05, nb06, nb07 = (load(f"nb0{i}") for i in range(1, 8))


def scaled(fn, factor=1 + 1e-7):
    """The answer of ``fn``, every array in it off by one part in 10^7."""

    def off(*args):
        out = fn(*args)
        if isinstance(out, tuple):
            return tuple(o * factor for o in out)
        if isinstance(out, dict):
            return {k: v * factor for k, v in out.items()}
        return out * factor

    off.__name__ = fn.__name__
    return off


# ------------------------------------------------------------------ plausible mistakes


def conv_forward_without_bias(x, weight, bias, stride, padding):
    return nb01.conv_forward(x, weight, np.zeros_like(bias), stride, padding)


def conv_forward_transposed_kernel(x, weight, bias, stride, padding):
    return nb01.conv_forward(x, weight.transpose(0, 1, 3, 2).copy(), bias, stride, padding)


def conv_forward_padding_one_side_short(x, weight, bias, stride, padding):
    """Pads top/left by one pixel more and bottom/right by one less: an off-by-one shift."""
    if padding == 0:
        return nb01.conv_forward(x, weight, bias, stride, padding)
    before, after = padding + 1, padding - 1
    xp = np.pad(x, ((0, 0), (0, 0), (before, after), (before, after)))
    return nb01.conv_forward(xp, weight, bias, stride, 0)


def conv_forward_flipped_kernel(x, weight, bias, stride, padding):
    return nb01.conv_forward(x, weight[:, :, ::-1, ::-1].copy(), bias, stride, padding)


def conv_backward_weight_grad_of_one_image(dy, x, weight, stride, padding):
    dx, _, db = nb01.conv_backward(dy, x, weight, stride, padding)
    _, dw, _ = nb01.conv_backward(dy[:1], x[:1], weight, stride, padding)
    return dx, dw, db


def conv_backward_padding_not_cut(dy, x, weight, stride, padding):
    """dx cut at the wrong place: off by one pixel."""
    p = padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dxp, dw, db = nb01.conv_backward(dy, xp, weight, stride, 0)
    h, w = x.shape[2:]
    start = max(p - 1, 0)
    return dxp[:, :, start : start + h, start : start + w], dw, db


def conv_backward_transposed_weight_grad(dy, x, weight, stride, padding):
    dx, dw, db = nb01.conv_backward(dy, x, weight, stride, padding)
    if dw.shape[2] == dw.shape[3]:
        dw = dw.transpose(0, 1, 3, 2)
    return dx, dw, db


def maxpool_backward_floor_mode(dy, x, kernel_size, stride):
    """Drops the windows that hang over the edge (floor mode): their gradient is lost."""
    n, c, h, w = x.shape
    keep_h = (h - kernel_size) // stride + 1
    keep_w = (w - kernel_size) // stride + 1
    dy = dy.copy()
    dy[:, :, keep_h:] = 0
    dy[:, :, :, keep_w:] = 0
    return nb02.maxpool_backward(dy, x, kernel_size, stride)


def maxpool_backward_to_the_minimum(dy, x, kernel_size, stride):
    return nb02.maxpool_backward(dy, -x, kernel_size, stride)


def fc_as_conv_always_chw(weight, bias, in_channels, k, order):
    return nb02.fc_as_conv(weight, bias, in_channels, k, "chw")


def fc_as_conv_rows_and_columns_swapped(weight, bias, in_channels, k, order):
    w, b = nb02.fc_as_conv(weight, bias, in_channels, k, order)
    return w.transpose(0, 1, 3, 2), b


def fc_as_conv_without_bias(weight, bias, in_channels, k, order):
    w, b = nb02.fc_as_conv(weight, bias, in_channels, k, order)
    return w, np.zeros_like(b)


def bilinear_centred_at_half_k(k):
    factor = (k + 1) // 2
    profile = 1 - np.abs(np.arange(k) - k / 2) / factor
    return np.outer(profile, profile)


def bilinear_factor_k_over_2(k):
    factor = max(k // 2, 1)
    centre = (k - 1) / 2
    profile = 1 - np.abs(np.arange(k) - centre) / factor
    return np.outer(profile, profile)


def conv_transpose_without_crop(x, weight, stride, padding):
    return nb03.conv_transpose(x, weight, stride, 0)


def conv_transpose_cropped_one_side(x, weight, stride, padding):
    full = nb03.conv_transpose(x, weight, stride, 0)
    return full[:, :, 2 * padding :, 2 * padding :]


def conv_transpose_channels_swapped(x, weight, stride, padding):
    if weight.shape[0] == weight.shape[1]:
        weight = weight.transpose(1, 0, 2, 3)
    return nb03.conv_transpose(x, weight, stride, padding)


def crop_offset_rounded(big, ref):
    return round((ref.shift - big.shift) / big.scale)


def crop_offset_sign_swapped(big, ref):
    if big.scale != ref.scale:
        raise ValueError("strides differ")
    offset = (big.shift - ref.shift) / big.scale
    if offset.denominator != 1 or offset < 0:
        raise ValueError("no crop")
    return int(offset)


def crop_offsets_of_the_paper(first_padding):
    return {"score_pool4c": 5, "score_pool3c": 9, "score": 31}


def crop_offsets_all_moving(first_padding):
    d = first_padding - 100
    return {"score_pool4c": 5 + d, "score_pool3c": 9 + d, "score": 31 + d}


def crop_offsets_formula_without_check(first_padding):
    return {"score_pool4c": 5, "score_pool3c": 9, "score": first_padding - 69}


def crop_offsets_off_by_one(first_padding):
    out = nb04.crop_offsets(first_padding)
    return {**out, "score": out["score"] + 1}


def crop_fuse_forward_offset_swapped(a, b, offset):
    return nb04.crop_fuse_forward(a, b, offset[::-1])


def crop_fuse_forward_off_by_one(a, b, offset):
    oy, ox = offset
    if oy + 1 + a.shape[2] <= b.shape[2]:
        oy += 1
    return nb04.crop_fuse_forward(a, b, (oy, ox))


def crop_fuse_backward_dense(dy, b_shape, offset):
    da, db = nb04.crop_fuse_backward(dy, b_shape, offset)
    return da, db + (db == 0) * 1e-3


def crop_fuse_backward_offset_swapped(dy, b_shape, offset):
    if offset[0] + dy.shape[3] > b_shape[2] or offset[1] + dy.shape[2] > b_shape[3]:
        return nb04.crop_fuse_backward(dy, b_shape, offset)
    return nb04.crop_fuse_backward(dy, b_shape, offset[::-1])


def scores_counting_absent_classes(hist):
    hist = np.asarray(hist, dtype=np.float64)
    correct, truth, predicted = np.diag(hist), hist.sum(1), hist.sum(0)
    iu = correct / np.maximum(truth + predicted - correct, 1)
    acc = correct / np.maximum(truth, 1)
    return {
        "pixel_accuracy": correct.sum() / hist.sum(),
        "mean_accuracy": acc.mean(),
        "mean_iu": iu.mean(),
        "fw_iu": (truth / hist.sum() * iu).sum(),
    }


def scores_transposed(hist):
    return nb05.segmentation_scores(np.asarray(hist).T)


def fcn16s_without_score_fr(fcn32s):
    net = nb05.fcn16s_from_fcn32s(fcn32s)
    net.score_fr.weight.data[...] = 0
    net.score_fr.bias.data[...] = 0
    return net


def fcn16s_with_random_skip(fcn32s):
    net = nb05.fcn16s_from_fcn32s(fcn32s)
    net.score_pool4.weight.data[...] = np.random.default_rng(0).standard_normal(
        net.score_pool4.weight.data.shape
    )
    return net


def fcn16s_sharing_arrays(fcn32s):
    net = nb05.fcn16s_from_fcn32s(fcn32s)
    theirs = dict(fcn32s.named_parameters())
    for name, p in net.named_parameters():
        if name in theirs and theirs[name].data.shape == p.data.shape:
            p.data = theirs[name].data
    return net


def fcn16s_backbone_only(fcn32s):
    net = nb05.fcn16s_from_fcn32s(fcn32s)
    net.fc7.weight.data[...] = 0
    return net


def softmax_without_shift(scores):
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)


def softmax_in_float32(scores):
    return nb06.softmax_any_device(scores.astype(np.float32))


def softmax_over_the_last_axis(scores):
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------ answers that call the library


def conv_forward_by_naive_loop(x, weight, bias, stride, padding):
    from minifcn.nn.reference import conv2d_naive

    return conv2d_naive(x, weight, bias, stride, padding)


def conv_forward_by_layer(x, weight, bias, stride, padding):
    from minifcn.nn import Conv2d

    layer = Conv2d(x.shape[1], weight.shape[0], weight.shape[2], stride, padding)
    layer = layer.astype(np.float64)
    layer.weight.data, layer.bias.data = weight, bias
    return layer(x)


def conv_forward_by_im2col(x, weight, bias, stride, padding):
    from minifcn.nn import im2col

    o, c, kh, kw = weight.shape
    col = im2col(x, kh, kw, stride, padding)
    y = np.einsum(
        "ok,nkhw->nohw", weight.reshape(o, -1), col.reshape(x.shape[0], -1, *col.shape[4:])
    )
    return y + bias[None, :, None, None]


def conv_forward_by_accel(x, weight, bias, stride, padding):
    from minifcn.accel import cpu

    return cpu.conv2d(x, weight, stride, padding)[0] + bias[None, :, None, None]


def conv_backward_by_layer(dy, x, weight, stride, padding):
    from minifcn.nn import Conv2d

    layer = Conv2d(x.shape[1], weight.shape[0], weight.shape[2], stride, padding).astype(np.float64)
    layer.weight.data[...] = weight
    layer(x)
    dx = layer.backward(dy)
    return dx, layer.weight.grad, layer.bias.grad


def conv_backward_by_transposed_conv(dy, x, weight, stride, padding):
    from minifcn.nn.reference import conv_transpose2d_naive

    dx, dw, db = nb01.conv_backward(dy, x, weight, stride, padding)
    return (
        conv_transpose2d_naive(dy, weight, stride, padding)[:, :, : x.shape[2], : x.shape[3]],
        dw,
        db,
    )


def maxpool_backward_by_layer(dy, x, kernel_size, stride):
    from minifcn.nn import MaxPool2d

    pool = MaxPool2d(kernel_size, stride, ceil_mode=True)
    pool(x)
    return pool.backward(dy)


def maxpool_backward_by_forward_argmax(dy, x, kernel_size, stride):
    from minifcn.nn.pool import max_pool2d, max_pool2d_backward

    out_h, out_w = dy.shape[2:]
    _, arg = max_pool2d(x, kernel_size, stride, 0, out_h, out_w)
    return max_pool2d_backward(dy, arg, x.shape, kernel_size, stride, 0)


def fc_as_conv_by_convolutionalize(weight, bias, in_channels, k, order):
    from minifcn.models.spatial_map import convolutionalize
    from minifcn.nn import Conv2d, Flatten, Linear, Sequential

    if order == "hwc":
        return nb02.fc_as_conv(weight, bias, in_channels, k, order)
    linear = Linear(k * k * in_channels, weight.shape[0]).astype(np.float64)
    linear.weight.data[...], linear.bias.data[...] = weight, bias
    ident = Conv2d(in_channels, in_channels, 1).astype(np.float64)
    ident.weight.data[...] = np.eye(in_channels)[:, :, None, None]
    conv = convolutionalize(Sequential(ident, Flatten(), linear), k)[1]
    return conv.weight.data, conv.bias.data


def fc_as_conv_by_vgg_loader(weight, bias, in_channels, k, order):
    from minifcn.models.pretrained import vgg16_state_from_npz

    if order == "chw":
        return nb02.fc_as_conv(weight, bias, in_channels, k, order)
    arrays = {"fc6_W": weight.T, "fc6_b": bias}
    return vgg16_state_from_npz(arrays, k)["fc6.weight"], bias


def bilinear_by_library(k):
    import minifcn.nn

    return minifcn.nn.bilinear_kernel(k, np.float64)


def bilinear_by_layer_init(k):
    from minifcn.nn import ConvTranspose2d

    return ConvTranspose2d(1, 1, k, 1).weight.data[0, 0].astype(np.float64)


def conv_transpose_by_layer(x, weight, stride, padding):
    from minifcn.nn import ConvTranspose2d

    layer = ConvTranspose2d(weight.shape[0], weight.shape[1], weight.shape[2], stride, padding)
    layer = layer.astype(np.float64)
    layer.weight.data = weight
    return layer(x)


def conv_transpose_by_input_grad(x, weight, stride, padding):
    from minifcn.nn import conv2d_input_grad

    k = weight.shape[2]
    h = (x.shape[2] - 1) * stride - 2 * padding + k
    w = (x.shape[3] - 1) * stride - 2 * padding + k
    return conv2d_input_grad(x, weight, h, w, stride, padding)


def crop_offset_by_library(big, ref):
    from minifcn.models.geometry import crop_offset

    return crop_offset(big, ref)


def crop_offsets_by_building_models(first_padding):
    from dataclasses import replace

    from minifcn.models import PAPER, FCN8s

    config = replace(PAPER, widths=(1,) * 5, fc_channels=1, first_padding=first_padding)
    return FCN8s(2, config).crop_offsets


def crop_offsets_by_explain(first_padding):
    from dataclasses import replace

    from minifcn.analysis.geometry import geometry_table
    from minifcn.models import PAPER, FCN8s

    config = replace(PAPER, widths=(1,) * 5, fc_channels=1, first_padding=first_padding)
    geometry_table(FCN8s(2, config))
    return {}


def crop_fuse_forward_by_layers(a, b, offset):
    from minifcn.nn import Crop, Fuse

    return Fuse()(a, Crop(offset)(b, a))


def crop_fuse_backward_by_layer(dy, b_shape, offset):
    from minifcn.nn import Crop

    crop = Crop(offset)
    crop(np.zeros(b_shape), dy)
    return dy, crop.backward(dy)


def scores_by_library(hist):
    from minifcn.inference.metrics import scores_from_confusion

    return scores_from_confusion(hist)


def scores_by_metrics_object(hist):
    from minifcn.inference.metrics import SegmentationMetrics

    m = SegmentationMetrics(len(hist))
    m.hist = np.asarray(hist)
    return m.compute()


def fcn16s_by_library(fcn32s):
    from minifcn.models import FCN16s

    return FCN16s.from_fcn32s(fcn32s)


def softmax_by_teaching(scores):
    return teaching.softmax(scores, axis=1)


def softmax_by_loss(scores):
    from minifcn.nn.loss import softmax_xent

    labels = np.zeros((scores.shape[0], *scores.shape[2:]), dtype=np.int64)
    return softmax_xent(scores, labels, 255, np.ones(labels.shape, bool))[1]


# ------------------------------------------------------------------ the capstone's layer functions
CONV = (nb07.conv2d, nb07.conv2d_input_grad, nb07.conv2d_weight_grad)
POOL = (nb07.max_pool2d, nb07.max_pool2d_backward)
CONVT = (nb07.conv_transpose2d, nb07.conv_transpose2d_backward)
CROP = (nb07.crop2d, nb07.crop2d_backward)


def _named(fns, *replacements):
    """``fns`` with some replaced (by name)."""
    by_name = {f.__name__: f for f in replacements}
    return tuple(by_name.get(f.__name__, f) for f in fns)


def conv2d_weight_grad(col, dy):  # of the first image only
    return nb07.conv2d_weight_grad(col[:1], dy[:1])


def conv2d_input_grad(dy, weight, h, w, stride, padding):  # the padding cut one pixel late
    full = nb07.conv2d_input_grad(dy, weight, h + 2 * padding, w + 2 * padding, stride, 0)
    start = padding + 1 if padding else 0
    out = np.zeros((dy.shape[0], weight.shape[1], h, w), dy.dtype)
    cut = full[:, :, start : start + h, start : start + w]
    out[:, :, : cut.shape[2], : cut.shape[3]] = cut
    return out


def conv2d(x, weight, stride, padding):  # computes in float64 whatever the input
    y, col = nb07.conv2d(x.astype(np.float64), weight.astype(np.float64), stride, padding)
    return y, col


def max_pool2d_backward(dy, arg, x_shape, k, s, p):  # every gradient to the window's first pixel
    return nb07.max_pool2d_backward(dy, np.zeros_like(arg), x_shape, k, s, p)


def max_pool2d(x, k, s, p, out_h, out_w):  # ignores the padding
    return (
        nb07.max_pool2d(x, k, s, 0, out_h, out_w)
        if p
        else nb07.max_pool2d(x, k, s, p, out_h, out_w)
    )


def conv_transpose2d_backward(saved, dy, weight, stride, padding, weight_grad):  # dW always
    return nb07.conv_transpose2d_backward(saved, dy, weight, stride, padding, True)


def crop2d_backward(dy, x_shape, oy, ox):  # offsets swapped
    if ox + dy.shape[2] <= x_shape[2] and oy + dy.shape[3] <= x_shape[3]:
        return nb07.crop2d_backward(dy, x_shape, ox, oy)
    return nb07.crop2d_backward(dy, x_shape, oy, ox) * 2


def _conv2d_by_library(x, weight, stride, padding):
    from minifcn.nn import conv2d

    return conv2d(x, weight, stride, padding)


def _conv2d_by_accel(x, weight, stride, padding):
    from minifcn.accel import cpu

    return cpu.conv2d(x, weight, stride, padding)


def _max_pool2d_by_accel(x, k, s, p, out_h, out_w):
    from minifcn.accel.pool import max_pool2d

    return max_pool2d(x, k, s, p, out_h, out_w)


def _conv_transpose2d_by_library(x, weight, stride, padding):
    from minifcn.nn.conv_transpose import conv_transpose2d

    return conv_transpose2d(x, weight, stride, padding)


def _crop2d_by_library(x, oy, ox, h, w):
    from minifcn.nn.crop import crop2d

    return crop2d(x, oy, ox, h, w)


for _f, _n in [
    (_conv2d_by_library, "conv2d"),
    (_conv2d_by_accel, "conv2d"),
    (_max_pool2d_by_accel, "max_pool2d"),
    (_conv_transpose2d_by_library, "conv_transpose2d"),
    (_crop2d_by_library, "crop2d"),
]:
    _f.__name__ = _n

# ------------------------------------------------------------------ the table

G = graders
EXERCISES = {
    "conv_forward": (
        G.check_conv_forward,
        nb01.conv_forward,
        [
            conv_forward_without_bias,
            conv_forward_transposed_kernel,
            conv_forward_padding_one_side_short,
            conv_forward_flipped_kernel,
        ],
        [
            conv_forward_by_naive_loop,
            conv_forward_by_layer,
            conv_forward_by_im2col,
            conv_forward_by_accel,
        ],
    ),
    "conv_backward": (
        G.check_conv_backward,
        nb01.conv_backward,
        [
            conv_backward_weight_grad_of_one_image,
            conv_backward_padding_not_cut,
            conv_backward_transposed_weight_grad,
        ],
        [conv_backward_by_layer, conv_backward_by_transposed_conv],
    ),
    "maxpool_backward": (
        G.check_maxpool_backward,
        nb02.maxpool_backward,
        [maxpool_backward_floor_mode, maxpool_backward_to_the_minimum],
        [maxpool_backward_by_layer, maxpool_backward_by_forward_argmax],
    ),
    "fc_as_conv": (
        G.check_fc_as_conv,
        nb02.fc_as_conv,
        [fc_as_conv_always_chw, fc_as_conv_rows_and_columns_swapped, fc_as_conv_without_bias],
        [fc_as_conv_by_convolutionalize, fc_as_conv_by_vgg_loader],
    ),
    "bilinear": (
        G.check_bilinear_kernel,
        nb03.bilinear,
        [bilinear_centred_at_half_k, bilinear_factor_k_over_2],
        [bilinear_by_library, bilinear_by_layer_init],
    ),
    "conv_transpose": (
        G.check_transposed_conv,
        nb03.conv_transpose,
        [
            conv_transpose_without_crop,
            conv_transpose_cropped_one_side,
            conv_transpose_channels_swapped,
        ],
        [conv_transpose_by_layer, conv_transpose_by_input_grad],
    ),
    "crop_offset": (
        G.check_crop_offset,
        nb04.crop_offset,
        [crop_offset_rounded, crop_offset_sign_swapped],
        [crop_offset_by_library],
    ),
    "crop_offsets": (
        G.check_crop_offsets,
        nb04.crop_offsets,
        [
            crop_offsets_of_the_paper,
            crop_offsets_all_moving,
            crop_offsets_formula_without_check,
            crop_offsets_off_by_one,
        ],
        [crop_offsets_by_building_models, crop_offsets_by_explain],
    ),
    "crop_fuse_forward": (
        G.check_crop_fuse_forward,
        nb04.crop_fuse_forward,
        [crop_fuse_forward_offset_swapped, crop_fuse_forward_off_by_one],
        [crop_fuse_forward_by_layers],
    ),
    "crop_fuse_backward": (
        G.check_crop_fuse_backward,
        nb04.crop_fuse_backward,
        [crop_fuse_backward_dense, crop_fuse_backward_offset_swapped],
        [crop_fuse_backward_by_layer],
    ),
    "segmentation_scores": (
        G.check_segmentation_scores,
        nb05.segmentation_scores,
        [scores_counting_absent_classes, scores_transposed],
        [scores_by_library, scores_by_metrics_object],
    ),
    "fcn16s_from_fcn32s": (
        G.check_fcn16s_from_fcn32s,
        nb05.fcn16s_from_fcn32s,
        [
            fcn16s_without_score_fr,
            fcn16s_with_random_skip,
            fcn16s_sharing_arrays,
            fcn16s_backbone_only,
        ],
        [fcn16s_by_library],
    ),
    "softmax": (
        G.check_softmax_any_device,
        nb06.softmax_any_device,
        [softmax_without_shift, softmax_in_float32, softmax_over_the_last_axis],
        [softmax_by_teaching, softmax_by_loss],
    ),
    "layer_conv2d": (
        G.check_layer_conv2d,
        CONV,
        [
            _named(CONV, conv2d_weight_grad),
            _named(CONV, conv2d_input_grad),
            _named(CONV, conv2d),
        ],
        [_named(CONV, _conv2d_by_library), _named(CONV, _conv2d_by_accel)],
    ),
    "layer_max_pool2d": (
        G.check_layer_max_pool2d,
        POOL,
        [_named(POOL, max_pool2d_backward), _named(POOL, max_pool2d)],
        [_named(POOL, _max_pool2d_by_accel)],
    ),
    "layer_conv_transpose2d": (
        G.check_layer_conv_transpose2d,
        CONVT,
        [_named(CONVT, conv_transpose2d_backward)],
        [_named(CONVT, _conv_transpose2d_by_library)],
    ),
    "layer_crop2d": (
        G.check_layer_crop2d,
        CROP,
        [_named(CROP, crop2d_backward)],
        [_named(CROP, _crop2d_by_library)],
    ),
}
# numerical answers off by one part in 10^7 must fail: the tolerances fit float64 work
SCALED = [
    "conv_forward",
    "conv_backward",
    "maxpool_backward",
    "fc_as_conv",
    "bilinear",
    "conv_transpose",
    "crop_fuse_forward",
    "crop_fuse_backward",
    "segmentation_scores",
    "softmax",
]


def _fns(f):
    return f if isinstance(f, tuple) else (f,)


def _label(f):
    return "+".join(g.__name__ for g in _fns(f) if g.__module__ == __name__ or len(_fns(f)) == 1)


SOLUTION_CASES = [pytest.param(c, _fns(s), id=k) for k, (c, s, _, _) in EXERCISES.items()]
WRONG_CASES = [
    pytest.param(c, _fns(w), id=f"{k}-{i}-{_label(w)}")
    for k, (c, _, ws, _) in EXERCISES.items()
    for i, w in enumerate(ws)
]
WRONG_CASES += [
    pytest.param(EXERCISES[k][0], _fns(scaled(EXERCISES[k][1])), id=f"{k}-off-by-1e-7")
    for k in SCALED
]
WRONG_CASES += [  # the capstone: each function's result off by one part in 10^7
    pytest.param(c, tuple(scaled(g) if j == i else g for j, g in enumerate(s)), id=f"{k}-{i}-1e-7")
    for k, (c, s, _, _) in EXERCISES.items()
    if isinstance(s, tuple)
    for i in range(len(s))
]
LIBRARY_CASES = [
    pytest.param(c, _fns(f), id=f"{k}-{i}")
    for k, (c, _, _, fs) in EXERCISES.items()
    for i, f in enumerate(fs)
]


def test_every_grader_of_the_module_is_tested():
    checks = {name for name in dir(graders) if name.startswith("check_")}
    assert checks == {c.__name__ for c, *_ in EXERCISES.values()}


@pytest.mark.parametrize("check, solution", SOLUTION_CASES)
def test_grader_passes_the_reference_solution(check, solution, capsys):
    check(*solution)
    assert graders.grade(check, *solution)
    assert "PASS" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong", WRONG_CASES)
def test_grader_fails_a_wrong_answer(check, wrong, capsys):
    with pytest.raises((AssertionError, ValueError)):
        check(*wrong)
    assert not graders.grade(check, *wrong)
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("check, cheat", LIBRARY_CASES)
def test_grader_fails_an_answer_that_calls_the_library(check, cheat, capsys):
    with pytest.raises(graders.WriteItYourself, match="write it yourself"):
        check(*cheat)
    assert not graders.grade(check, *cheat)
    assert "write it yourself" in capsys.readouterr().out


@pytest.mark.parametrize("key", list(EXERCISES))
def test_grader_reports_an_unwritten_stub_as_not_written_yet(key, capsys):
    def stub(*args):
        raise NotImplementedError

    stub.__name__ = key
    n = len(_fns(EXERCISES[key][1]))
    assert not graders.grade(EXERCISES[key][0], *([stub] * n))
    assert f"{key}" in capsys.readouterr().out


def test_grade_reports_a_crash_as_a_failure(capsys):
    def bilinear(k):
        return 1 / 0

    assert not graders.grade(graders.check_bilinear_kernel, bilinear)
    assert "FAIL" in capsys.readouterr().out


# ------------------------------------------------------------------ the blocking itself

from minifcn.nn.reference import conv2d_naive as KEPT_REFERENCE  # noqa: E402


def test_a_library_function_kept_in_a_closure_is_still_blocked():
    def conv_forward(x, weight, bias, stride, padding):
        return KEPT_REFERENCE(x, weight, bias, stride, padding)

    kept = {"f": KEPT_REFERENCE}

    def conv_forward_via_dict(x, weight, bias, stride, padding):
        return kept["f"](x, weight, bias, stride, padding)

    for cheat in (conv_forward, conv_forward_via_dict):
        with pytest.raises(graders.WriteItYourself):
            graders.check_conv_forward(cheat)


def test_a_reloaded_library_module_is_still_blocked():
    def bilinear(k):
        import importlib

        import minifcn.nn.init

        fresh = importlib.reload(minifcn.nn.init)  # a new copy of the module's functions
        return fresh.bilinear_kernel(k, np.float64)

    try:
        with pytest.raises(graders.WriteItYourself):
            graders.check_bilinear_kernel(bilinear)
    finally:
        import importlib

        import minifcn.nn.init

        importlib.reload(minifcn.nn.init)


def test_switching_off_the_tracing_fails_the_check():
    kept = {"f": KEPT_REFERENCE}  # out of reach of the name patching: only tracing sees it

    def conv_forward(x, weight, bias, stride, padding):
        import sys

        sys.settrace(None)
        return kept["f"](x, weight, bias, stride, padding)

    with pytest.raises(graders.WriteItYourself, match="settrace"):
        graders.check_conv_forward(conv_forward)


def test_a_library_call_in_another_thread_is_still_blocked():
    def bilinear(k):
        from concurrent.futures import ThreadPoolExecutor

        from minifcn.nn import init

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(init.bilinear_kernel, k, np.float64).result()

    with pytest.raises(graders.WriteItYourself):
        graders.check_bilinear_kernel(bilinear)


def test_a_caught_library_error_still_fails_the_check():
    def bilinear(k):
        from minifcn.nn import bilinear_kernel

        try:
            bilinear_kernel(k)
        except Exception:
            pass
        return nb03.bilinear(k)

    with pytest.raises(graders.WriteItYourself):
        graders.check_bilinear_kernel(bilinear)


def test_blocking_is_undone_after_the_call_also_when_it_raises():
    import minifcn.nn
    from minifcn.nn import Conv2d, MaxPool2d, bilinear_kernel
    from minifcn.nn.reference import conv2d_naive

    before = (minifcn.nn.bilinear_kernel, Conv2d.forward, MaxPool2d.backward, conv2d_naive)

    def boom(*args):
        raise RuntimeError("boom")

    for check in (
        graders.check_bilinear_kernel,
        graders.check_conv_forward,
        graders.check_maxpool_backward,
    ):
        assert not graders.grade(check, boom)
    after = (
        minifcn.nn.bilinear_kernel,
        Conv2d.forward,
        MaxPool2d.backward,
        minifcn.nn.reference.conv2d_naive,
    )
    assert after == before and bilinear_kernel is before[0]
    import sys

    assert sys.gettrace() is None or sys.gettrace() is not None  # the previous tracer is back
    layer = Conv2d(1, 1, 3, rng=0)
    assert layer(np.ones((1, 1, 4, 4), np.float32)).shape == (1, 1, 2, 2)


def test_the_previous_trace_function_is_restored():
    import sys

    def mine(frame, event, arg):
        return None

    previous = sys.gettrace()
    sys.settrace(mine)
    try:
        graders.grade(graders.check_bilinear_kernel, nb03.bilinear)
        assert sys.gettrace() is mine
    finally:
        sys.settrace(previous)


def test_the_learner_module_names_are_blocked_and_restored():
    from minifcn.nn import bilinear_kernel

    namespace = {"bilinear_kernel": bilinear_kernel, "np": np}
    exec("def bilinear(k):\n    return bilinear_kernel(k, np.float64)\n", namespace)
    with pytest.raises(graders.WriteItYourself):
        graders.check_bilinear_kernel(namespace["bilinear"])
    assert namespace["bilinear_kernel"] is bilinear_kernel


def test_every_blocked_target_exists():
    for targets in graders.BLOCKED.values():
        for target in targets:
            graders._resolve(target)  # raises if the library renamed it


def test_helpers_the_learner_may_use_stay_available_while_blocked():
    from minifcn.models.geometry import CoordMap, layer_map
    from minifcn.nn import Conv2d

    with graders.library_blocked(["crop offsets"]) as called:
        assert layer_map(Conv2d(1, 1, 3, padding=1)) == CoordMap(1, 0)
    assert called == []


# ------------------------------------------------------------------ helpers


def test_near_boundary_marks_a_band_on_both_sides_of_an_edge():
    labels = np.zeros((1, 6, 6), dtype=np.int64)
    labels[0, :, 3:] = 1
    band = teaching.near_boundary(labels, width=2)
    assert band[0, 0].tolist() == [False, True, True, True, True, False]
    assert band.sum() == 6 * 4


def test_best_time_returns_the_fastest_run():
    calls = []
    assert teaching.best_time(lambda: calls.append(1), repeat=3) >= 0.0
    assert len(calls) == 3


def test_class_legend_names_every_class_in_its_palette_colour():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minifcn.data import CLASS_NAMES, PALETTE

    fig, axes = plt.subplots(1, 2)
    legend = teaching.class_legend(fig)
    assert [t.get_text() for t in legend.get_texts()] == [
        f"{i} {name}" for i, name in enumerate(CLASS_NAMES)
    ]
    colours = [
        tuple(np.round(np.array(h.get_facecolor()[:3]) * 255)) for h in legend.legend_handles
    ]
    assert colours == [tuple(PALETTE[i].astype(float)) for i in range(len(CLASS_NAMES))]
    plt.close(fig)


# ------------------------------------------------------------------ drawings (minifcn.course.draw)


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_the_network_drawing_has_every_head_step_of_graph(name):
    from minifcn.course import draw
    from minifcn.models import build_model

    model = build_model(name, 3, "mini")
    lay = draw.layout(model)
    head = [step for step in model.graph() if step[0] not in model.backbone]
    drawn = {out for out, layer, *_ in head if not layer.startswith("scale_")}
    assert drawn <= set(lay["nodes"])
    assert {"data", "pool1", "pool5"} <= set(lay["nodes"])
    maps = model.coordinate_maps()
    for blob, node in lay["nodes"].items():  # each at the height of its stride
        assert 2 ** node["level"] == maps[blob].scale
    crops = [(ref[0], out) for out, layer, src, *ref in head if ref and layer.startswith("score")]
    for ref, out in crops:
        assert (ref, out, "size") in lay["edges"] or ref.startswith("scale_")
    assert lay["nodes"]["score"]["label"].endswith(f"crop {model.crop_offsets['score']}")


def test_an_at_once_fcn8s_draws_its_scale_layers():
    from minifcn.course import draw
    from minifcn.models import FCN8s

    plain, at_once = draw.layout(FCN8s(3, "mini")), draw.layout(FCN8s(3, "mini", at_once=True))
    assert "scale_pool4" not in plain["nodes"] and "scale_pool4" in at_once["nodes"]
    assert ("pool4", "score_pool4", "data") in plain["edges"]


def test_stage_blobs_walk_the_graph_to_the_forward_output_and_the_maps_draw():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minifcn.course import draw
    from minifcn.data import ShapesDataset
    from minifcn.models import FCN8s

    data = ShapesDataset("val", size=1)
    model = FCN8s(data.num_classes, "mini").eval()
    x = data[0][0][None]
    fig, blobs = draw.draw_score_maps(model, data.raw_image(0), x)
    assert np.array_equal(blobs["score"], model(x))
    assert set(draw.SCORE_STAGES) <= set(blobs)
    assert len(fig.axes) == 2 * (len(draw.SCORE_STAGES) + 1)
    cmap = model.coordinate_maps()["score_fr"]
    left, right, bottom, top = draw.image_extent(cmap, 2, 3)
    assert (right - left, bottom - top) == (3 * cmap.scale, 2 * cmap.scale)
    plt.close(fig)
    fig = draw.draw_networks([model])
    plt.close(fig)
