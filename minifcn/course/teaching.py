"""What the notebooks share: small helpers, and the graders of their exercises.

The notebooks in ``notebooks/`` import from here instead of repeating code as text.

Exercises follow the CS231n pattern: the notebook gives a function's contract and a
stub that raises ``NotImplementedError``; the learner writes the body; a check cell
calls ``grade(check_..., their_function)``. Each ``check_*`` runs the function on
small random cases and compares it with the library (the layer the exercise is
about), raising ``AssertionError`` with a message that says what differs. The
reference solutions live in ``notebooks/solutions/`` and are never imported here:
the tests run every check against them, and against a deliberately wrong answer.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import replace

import numpy as np

from minifcn.analysis.oracle import label_edges

# ----------------------------------------------------------------------------- helpers


def best_time(fn, repeat: int = 5) -> float:
    """The shortest of ``repeat`` wall-clock times of ``fn()``, in seconds.

    The minimum, not the mean: on a shared machine the slow runs are the ones
    another program interrupted, and the fastest run is the best estimate of the
    code's own cost.
    """
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def softmax(scores, axis: int):
    """Numerically stable softmax of a NumPy array along ``axis``."""
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def class_legend(target, names=None, **kwargs):
    """Add a legend of class colours (the palette ``colorize`` uses) to a figure or axes.

    ``names`` defaults to the shapes classes. Extra keyword arguments go to ``legend``.
    """
    from matplotlib.patches import Patch

    from minifcn.data import CLASS_NAMES, PALETTE

    names = CLASS_NAMES if names is None else names
    handles = [
        Patch(facecolor=PALETTE[i] / 255.0, edgecolor="0.5", label=f"{i} {name}")
        for i, name in enumerate(names)
    ]
    kwargs.setdefault("ncol", len(names))
    kwargs.setdefault("frameon", False)
    if hasattr(target, "add_subplot"):  # a Figure: just below its bottom row of panels
        bottom = min((ax.get_position().y0 for ax in target.axes), default=0.0)
        kwargs.setdefault("loc", "upper center")
        kwargs.setdefault("bbox_to_anchor", (0.5, bottom - 0.01))
    return target.legend(handles=handles, **kwargs)


def near_boundary(labels, width: int = 2) -> np.ndarray:
    """Boolean mask of the pixels within ``width`` pixels (4-neighbour steps) of a label edge.

    ``labels``: int (N, H, W). A pixel is on an edge when a 4-neighbour has another label.
    """
    edge = label_edges(labels)
    for _ in range(width - 1):  # grow the band by one pixel each time
        grown = edge.copy()
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        grown[:, :, 1:] |= edge[:, :, :-1]
        grown[:, :, :-1] |= edge[:, :, 1:]
        edge = grown
    return edge


# ----------------------------------------------------------------------------- grading


def grade(check, fn, solution_hint: str = "notebooks/solutions/") -> bool:
    """Run ``check(fn)`` and print the verdict; True when ``fn`` passes.

    A stub that still raises ``NotImplementedError`` is reported as not written
    yet (the notebook carries on); any other error or a failed comparison is
    reported with its message.
    """
    name = getattr(fn, "__name__", "your function")
    try:
        check(fn)
    except NotImplementedError:
        print(f"{name}: not written yet. Fill in its body, run its cell, then this one.")
        print(f"(A reference solution is in {solution_hint}.)")
        return False
    except AssertionError as err:
        print(f"{name}: FAIL: {err}")
        return False
    except Exception:  # the learner's code crashed: show where
        print(f"{name}: FAIL, it raised an error:")
        traceback.print_exc(limit=-3)
        return False
    print(f"{name}: PASS ({check.__doc__.strip().splitlines()[0]})")
    return True


def _close(mine, ref, what: str, tol: float = 1e-8) -> None:
    from minifcn.nn.gradcheck import rel_error

    mine = np.asarray(mine)
    assert mine.shape == np.shape(ref), f"{what}: shape {mine.shape}, expected {np.shape(ref)}"
    err = rel_error(mine, ref)
    assert err < tol, f"{what}: relative error {err:.1e} (expected < {tol:.0e})"


_CONV_CASES = [  # (N, C, H, W), (O, kh, kw), stride, padding
    ((2, 3, 7, 7), (4, 3, 3), 1, 1),
    ((1, 2, 8, 6), (3, 3, 3), 2, 1),
    ((2, 1, 5, 5), (2, 2, 2), 1, 0),
    ((1, 3, 9, 9), (2, 5, 5), 3, 2),
]


def _conv_layer(c, o, k, stride, padding, weight, bias):
    from minifcn.nn import Conv2d

    layer = Conv2d(c, o, k, stride=stride, padding=padding).astype(np.float64)
    layer.weight.data[...] = weight
    layer.bias.data[...] = bias
    return layer


def check_conv_forward(conv_forward) -> None:
    """matches minifcn.nn.Conv2d on 4 shapes, strides 1-3, paddings 0-2"""
    rng = np.random.default_rng(1)
    for (n, c, h, w), (o, kh, _), stride, padding in _CONV_CASES:
        x = rng.standard_normal((n, c, h, w))
        weight = rng.standard_normal((o, c, kh, kh))
        bias = rng.standard_normal(o)
        y = conv_forward(x, weight, bias, stride, padding)
        ref = _conv_layer(c, o, kh, stride, padding, weight, bias)(x)
        _close(
            y,
            ref,
            f"output for x {x.shape}, weight {weight.shape}, stride {stride}, padding {padding}",
        )


def check_conv_backward(conv_backward) -> None:
    """dx, dw, db match minifcn.nn.Conv2d.backward on 4 shapes"""
    rng = np.random.default_rng(2)
    for (n, c, h, w), (o, kh, _), stride, padding in _CONV_CASES:
        x = rng.standard_normal((n, c, h, w))
        weight = rng.standard_normal((o, c, kh, kh))
        layer = _conv_layer(c, o, kh, stride, padding, weight, np.zeros(o))
        dy = rng.standard_normal(layer(x).shape)
        layer.zero_grad()
        dx_ref = layer.backward(dy)
        got = conv_backward(dy, x, weight, stride, padding)
        assert len(got) == 3, "conv_backward must return (dx, dw, db)"
        case = f"x {x.shape}, stride {stride}, padding {padding}"
        for mine, ref, what in zip(
            got, (dx_ref, layer.weight.grad, layer.bias.grad), ("dx", "dw", "db")
        ):
            _close(mine, ref, f"{what} for {case}")


def distinct_values(shape, rng) -> np.ndarray:
    """Shuffled, well-separated values: a max pool over them has no ties."""
    return rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) / 10.0


def check_maxpool_backward(maxpool_backward) -> None:
    """matches minifcn.nn.MaxPool2d(ceil_mode=True).backward, odd sizes included"""
    from minifcn.nn import MaxPool2d

    rng = np.random.default_rng(3)
    for shape, k, s in [
        ((2, 3, 7, 7), 2, 2),
        ((1, 2, 6, 6), 2, 2),
        ((1, 2, 5, 8), 3, 2),
        ((2, 1, 9, 7), 3, 3),
    ]:
        x = distinct_values(shape, rng)
        pool = MaxPool2d(k, s, ceil_mode=True)
        dy = rng.standard_normal(pool(x).shape)
        ref = pool.backward(dy)
        _close(maxpool_backward(dy, x, k, s), ref, f"dx for x {shape}, kernel {k}, stride {s}")


def check_bilinear_kernel(bilinear) -> None:
    """equals minifcn.nn.bilinear_kernel for k = 1..8, 16 and 64"""
    from minifcn.nn import bilinear_kernel

    for k in [*range(1, 9), 16, 64]:
        _close(bilinear(k), bilinear_kernel(k, np.float64), f"kernel size {k}", tol=1e-6)


def check_transposed_conv(conv_transpose) -> None:
    """matches minifcn.nn.ConvTranspose2d for 4 kernel/stride/padding settings"""
    from minifcn.nn import ConvTranspose2d

    rng = np.random.default_rng(4)
    for (n, i, o, h), k, s, p in [
        ((2, 3, 2, 3), 4, 2, 1),
        ((1, 2, 3, 4), 3, 2, 0),
        ((1, 1, 1, 2), 2, 1, 0),
        ((2, 2, 2, 3), 16, 8, 4),
    ]:
        x = rng.standard_normal((n, i, h, h))
        layer = ConvTranspose2d(i, o, k, stride=s, padding=p, init="kaiming").astype(np.float64)
        layer.weight.data[...] = rng.standard_normal(layer.weight.data.shape)
        ref = layer(x)
        _close(
            conv_transpose(x, layer.weight.data, s, p),
            ref,
            f"output for x {x.shape}, kernel {k}, stride {s}, padding {p}",
        )


def _paper_like(first_padding: int):
    """A paper-geometry backbone with one channel per layer (geometry only)."""
    from minifcn.models import PAPER

    return replace(
        PAPER, name="paper-geometry", widths=(1,) * 5, fc_channels=1, first_padding=first_padding
    )


def check_crop_offsets(crop_offsets) -> None:
    """equals FCN8s(...).crop_offsets for first paddings 69, 80, 100, 117 and 164"""
    from minifcn.models import FCN8s

    for p in [69, 80, 100, 117, 164]:
        ref = FCN8s(2, _paper_like(p)).crop_offsets
        got = crop_offsets(p)
        assert dict(got) == ref, f"first padding {p}: got {dict(got)}, expected {ref}"


def check_segmentation_scores(segmentation_scores) -> None:
    """matches minifcn.inference.metrics.scores_from_confusion, absent classes included"""
    from minifcn.inference.metrics import scores_from_confusion

    rng = np.random.default_rng(5)
    cases = [rng.integers(0, 50, (4, 4)), rng.integers(0, 1000, (6, 6))]
    absent = rng.integers(1, 30, (5, 5))
    absent[3, :] = 0  # class 3 never in the ground truth, but predicted: IU 0, accuracy undefined
    absent[4, :] = 0
    absent[:, 4] = 0  # class 4 neither in the ground truth nor predicted: left out of the means
    cases.append(absent)
    for hist in cases:
        ref = scores_from_confusion(hist)
        got = segmentation_scores(hist.copy())
        for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu"):
            assert key in got, f"the result has no {key!r}"
            assert np.isfinite(got[key]), f"{key} is {got[key]} for {hist.tolist()}"
            assert abs(got[key] - ref[key]) < 1e-10, (
                f"{key} = {got[key]:.6f}, expected {ref[key]:.6f} for the confusion matrix "
                f"{hist.tolist()}"
            )


def check_softmax_any_device(softmax_fn) -> None:
    """equals the loss layer's softmax, stays finite for scores of 1e4, keeps the array type"""
    from minifcn.backend import as_numpy, cupy_module, gpu_available

    rng = np.random.default_rng(6)
    scores = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    _close(softmax_fn(scores), softmax(scores.astype(np.float64), 1), "softmax", tol=1e-5)
    big = scores * 1e4
    out = np.asarray(softmax_fn(big))
    assert np.isfinite(out).all(), "scores of size 1e4 give inf or NaN: subtract the maximum first"
    assert type(softmax_fn(scores)) is np.ndarray, "a NumPy input must give a NumPy output"
    if gpu_available():
        cp = cupy_module()
        out = softmax_fn(cp.asarray(scores))
        assert isinstance(out, cp.ndarray), "a CuPy input must give a CuPy output"
        _close(as_numpy(out), softmax(scores.astype(np.float64), 1), "softmax on the GPU", 1e-5)
