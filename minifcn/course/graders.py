"""The graders of the notebooks' exercises, which only pass what the learner wrote.

Exercises follow the CS231n pattern: the notebook gives a function's contract and a
stub that raises ``NotImplementedError``; the learner writes the body; a check cell
calls ``grade(check_..., their_function)``. Each ``check_*`` runs the function on
small random float64 cases and compares it with the library, raising
``AssertionError`` with a message that says what differs.

**The library is out of reach while the learner's function runs.** Each check names
the operations it grades (``BLOCKED`` lists, for each, every implementation the
package has: the plain ``minifcn.nn`` functions and layer methods, the accelerated
``minifcn.accel`` ones, the naive loops of ``minifcn.nn.reference``, helpers such as
``bilinear_kernel`` or ``scores_from_confusion``). For the duration of each call into
the learner's function, ``library_blocked``

* replaces each of them, wherever a ``minifcn`` module or the learner's own module
  binds it, by a function that raises ``WriteItYourself``, and
* traces calls (``sys.settrace``) so that a call reaching the original code by any
  other route (a reference kept in a closure, a layer's method, the dispatch table)
  raises the same error,

and restores everything afterwards, also when the function raises. A call that was
caught and hidden by the learner's code is still recorded and fails the check. The
references are computed outside those calls, so the checks themselves use the library.

The reference solutions live in ``notebooks/solutions/`` and are never imported here:
``tests/test_teaching.py`` runs every check against them (they must pass), against
plausible mistakes and slightly wrong answers (they must fail) and against answers
that call the library (they must fail with ``WriteItYourself``).
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import traceback
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

# ------------------------------------------------------------------ what each exercise blocks

_CONV = [
    "minifcn.nn.conv:conv2d",
    "minifcn.nn.conv:conv2d_input_grad",
    "minifcn.nn.conv:conv2d_weight_grad",
    "minifcn.nn.conv:Conv2d.forward",
    "minifcn.nn.conv:Conv2d.backward",
    "minifcn.nn.conv_transpose:conv_transpose2d",
    "minifcn.nn.conv_transpose:conv_transpose2d_backward",
    "minifcn.nn.conv_transpose:ConvTranspose2d.forward",
    "minifcn.nn.conv_transpose:ConvTranspose2d.backward",
    "minifcn.nn.im2col:im2col",
    "minifcn.nn.im2col:col2im",
    "minifcn.nn.linear:Linear.forward",
    "minifcn.nn.linear:Linear.backward",
    "minifcn.nn.reference:conv2d_naive",
    "minifcn.nn.reference:conv_transpose2d_naive",
    "minifcn.accel.cpu:conv2d",
    "minifcn.accel.cpu:conv2d_input_grad",
    "minifcn.accel.cpu:conv2d_weight_grad",
    "minifcn.accel.cpu:conv2d_bias",
    "minifcn.accel.cpu:conv2d_backward",
    "minifcn.accel.cpu:_conv2d",
    "minifcn.accel.cpu:conv_transpose2d",
    "minifcn.accel.cpu:conv_transpose2d_backward",
    "minifcn.accel.cpu:_conv_row_shift",
    "minifcn.accel.cpu:_row_shift_weight_grad",
    "minifcn.accel.cpu:_gather",
    "minifcn.accel.cpu:_shifted",
    "minifcn.accel.cpu:_scatter_add",
    "minifcn.accel.cpu:_patches",
    "minifcn.accel.cpu:_winograd_backward",
    "minifcn.accel.winograd:conv3x3",
    "minifcn.accel.winograd:transform_input",
    "minifcn.accel.winograd:transform_output",
    "minifcn.accel.winograd:products",
    "minifcn.accel.shared:weight_grad_product",
    "minifcn.accel.shared:pointwise_input_grad",
    "minifcn.accel.gpu:conv2d",
    "minifcn.accel.gpu:conv2d_input_grad",
    "minifcn.accel.gpu:conv2d_weight_grad",
    "minifcn.accel.gpu:conv2d_bias",
    "minifcn.accel.gpu:conv2d_backward",
    "minifcn.accel.gpu:conv_transpose2d",
    "minifcn.accel.gpu:conv_transpose2d_backward",
]
_POOL = [
    "minifcn.nn.pool:max_pool2d",
    "minifcn.nn.pool:max_pool2d_backward",
    "minifcn.nn.pool:MaxPool2d.forward",
    "minifcn.nn.pool:MaxPool2d.backward",
    "minifcn.nn.reference:max_pool2d_naive",
    "minifcn.nn.reference:pool_window_starts",
    "minifcn.accel.pool:max_pool2d",
    "minifcn.accel.pool:max_pool2d_backward",
    "minifcn.accel.cpu:max_pool2d",
    "minifcn.accel.cpu:max_pool2d_backward",
]
_CROP = [
    "minifcn.nn.crop:crop2d",
    "minifcn.nn.crop:crop2d_backward",
    "minifcn.nn.crop:Crop.forward",
    "minifcn.nn.crop:Crop.backward",
    "minifcn.nn.fuse:Fuse.forward",
    "minifcn.nn.fuse:Fuse.backward",
]

BLOCKED = {
    "convolution": _CONV,
    "max pooling": _POOL,
    "the bilinear kernel": ["minifcn.nn.init:bilinear_kernel", "minifcn.nn.init:bilinear_weight"],
    "crop and fuse": _CROP,
    "crop offsets": ["minifcn.models.geometry:crop_offset"],  # models are built with it
    "the segmentation scores": [
        "minifcn.inference.metrics:scores_from_confusion",
        "minifcn.inference.metrics:SegmentationMetrics.compute",
        "minifcn.inference.metrics:_ratio",
        "minifcn.inference.metrics:_nanmean",
    ],
    "the softmax": [
        "minifcn.course.teaching:softmax",
        "minifcn.nn.loss:softmax_xent",
        "minifcn.accel.cpu:softmax_xent",
        "minifcn.accel.gpu:softmax_xent",
    ],
    "convolutionalising": [
        "minifcn.models.spatial_map:convolutionalize",
        "minifcn.models.pretrained:vgg16_state_from_npz",
        "minifcn.models.pretrained:load_vgg16_npz",
    ],
    "staged initialisation": [
        "minifcn.models.fcn:FCN16s.from_fcn32s",
        "minifcn.models.fcn:FCN8s.from_fcn16s",
        "minifcn.models.fcn:_copy_shared",
    ],
}


class WriteItYourself(RuntimeError):
    """Raised when a graded function calls the library's own version of what it grades."""


def _resolve(target: str):
    """'pkg.mod:Cls.attr' -> (owner object, attribute name, the value in the owner's dict)."""
    module_name, _, path = target.partition(":")
    owner = importlib.import_module(module_name)
    *parents, attr = path.split(".")
    for name in parents:
        owner = getattr(owner, name)
    value = vars(owner)[attr]
    return owner, attr, value


def _where(code) -> tuple:
    """A code object's place: its file, first line and name."""
    return code.co_filename, code.co_firstlineno, code.co_name


def _code_of(value):
    func = getattr(value, "__func__", value)  # classmethod / staticmethod
    return getattr(func, "__code__", None)


@contextmanager
def library_blocked(groups, learner_globals=None):
    """While inside, every implementation in ``BLOCKED[g]`` for ``g`` in ``groups`` raises.

    Yields a list that collects the names of the blocked functions that were called
    (also those whose error the caller caught). Everything is restored on exit.
    """
    targets = [t for g in groups for t in BLOCKED[g]]
    called: list[str] = []
    patches = []  # (namespace dict or class, name, original)
    codes = {}
    originals = {}
    for target in targets:
        owner, attr, value = _resolve(target)
        label = f"{owner.__name__}.{attr}" if isinstance(owner, type) else target.replace(":", ".")
        originals[id(value)] = (value, label)
        code = _code_of(value)
        if code is not None:  # by place, so that a reloaded or re-executed copy is caught too
            codes[_where(code)] = label
        patches.append((owner, attr, value, label))

    def stand_in(label):
        def refuse(*args, **kwargs):
            called.append(label)
            raise WriteItYourself(
                f"your function called {label}, the library's own version of what this "
                "exercise asks for: write it yourself"
            )

        return refuse

    applied = []
    try:
        for owner, attr, value, label in patches:
            replacement = stand_in(label)
            if isinstance(value, (classmethod, staticmethod)):
                replacement = type(value)(replacement)
            applied.append((owner, attr, value))
            setattr(owner, attr, replacement)
        # The same objects under other names: package re-exports, `from x import f` in a
        # library module, and the names the learner's own module (the notebook) bound.
        spaces = [vars(m) for name, m in list(sys.modules.items()) if name.startswith("minifcn")]
        if learner_globals is not None:
            spaces.append(learner_globals)
        for space in spaces:
            for name, value in list(space.items()):
                if id(value) in originals and originals[id(value)][0] is value:
                    applied.append((space, name, value))
                    space[name] = stand_in(originals[id(value)][1])

        def tracer(frame, event, arg):
            if event == "call" and _where(frame.f_code) in codes:
                label = codes[_where(frame.f_code)]
                called.append(label)
                raise WriteItYourself(
                    f"your function called {label}, the library's own version of "
                    "what this exercise asks for: write it yourself"
                )
            return None

        previous, previous_threads = sys.gettrace(), threading.gettrace()
        sys.settrace(tracer)
        threading.settrace(tracer)  # threads started meanwhile are traced too
        try:
            yield called
            # The tracer unsets itself when it raises (then a call is recorded already);
            # otherwise it can only be gone if the learner's code switched it off.
            if sys.gettrace() is not tracer and not called:
                called.append("sys.settrace (switching off the grader's tracing)")
        finally:
            sys.settrace(previous)
            threading.settrace(previous_threads)
    finally:
        for owner, attr, value in reversed(applied):
            if isinstance(owner, dict):
                owner[attr] = value
            else:
                setattr(owner, attr, value)


def guarded(fn, groups):
    """``fn`` wrapped so that each call runs inside ``library_blocked(groups)``.

    The wrapper's ``library_calls`` lists every blocked function a call reached.
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        called = []
        try:
            with library_blocked(groups, getattr(fn, "__globals__", None)) as called:
                return fn(*args, **kwargs)
        finally:  # after the block has closed: it may add what it found on the way out
            run.library_calls.extend(called)

    run.library_calls = []
    return run


def grader(*groups):
    """Mark a check as grading the operations ``groups`` (keys of ``BLOCKED``)."""
    for g in groups:
        if g not in BLOCKED:
            raise KeyError(g)

    def decorate(check):
        @functools.wraps(check)
        def checked(*fns):
            learners = [guarded(fn, groups) for fn in fns]
            try:
                check(*learners)
            finally:
                calls = [c for learner in learners for c in learner.library_calls]
                if calls:
                    raise WriteItYourself(
                        f"your function called {calls[0]}, the library's own "
                        "version of what this exercise asks for: write it yourself"
                    )

        checked.blocks = groups
        return checked

    return decorate


def grade(check, *fns, solution_hint: str = "notebooks/solutions/") -> bool:
    """Run ``check(*fns)`` and print the verdict; True when the functions pass.

    A stub that still raises ``NotImplementedError`` is reported as not written
    yet (the notebook carries on); a call into the library's own implementation,
    any other error or a failed comparison is reported as a failure with its message.
    """
    name = ", ".join(getattr(fn, "__name__", "your function") for fn in fns)
    try:
        check(*fns)
    except NotImplementedError:
        print(f"{name}: not written yet. Fill in its body, run its cell, then this one.")
        print(f"(A reference solution is in {solution_hint}.)")
        return False
    except WriteItYourself as err:
        print(f"{name}: FAIL: {err}")
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


TOL = 1e-10  # float64 work agrees to about 1e-14; 1e-10 leaves room for summation order


def _close(mine, ref, what: str, tol: float = TOL) -> None:
    from minifcn.nn.gradcheck import rel_error

    mine = np.asarray(mine)
    assert mine.shape == np.shape(ref), f"{what}: shape {mine.shape}, expected {np.shape(ref)}"
    assert np.isfinite(mine).all(), f"{what}: contains inf or NaN"
    err = rel_error(mine, ref)
    assert err < tol, f"{what}: relative error {err:.1e} (expected < {tol:.0e})"


# ----------------------------------------------------------------------- notebook 01


_CONV_CASES = [  # (N, C, H, W), (O, kh, kw), stride, padding
    ((2, 3, 7, 7), (4, 3, 3), 1, 1),
    ((1, 2, 8, 6), (3, 3, 3), 2, 1),
    ((2, 1, 5, 5), (2, 2, 2), 1, 0),
    ((1, 3, 9, 9), (2, 5, 5), 3, 2),
    ((1, 2, 6, 7), (3, 3, 2), 1, 1),  # a non-square kernel: a transposed kernel shows
]


def _conv_reference(x, weight, bias, stride, padding):
    from minifcn.nn.reference import conv2d_naive

    return conv2d_naive(x, weight, bias, stride, padding)


def _conv_grads_reference(dy, x, weight, stride, padding):
    """(dx, dw, db) from the plain path's functions."""
    from minifcn.nn.conv import conv2d, conv2d_input_grad, conv2d_weight_grad

    _, col = conv2d(x, weight, stride, padding)
    dw = conv2d_weight_grad(col, dy).reshape(weight.shape)
    dx = conv2d_input_grad(dy, weight, x.shape[2], x.shape[3], stride, padding)
    return dx, dw, dy.sum(axis=(0, 2, 3))


@grader("convolution")
def check_conv_forward(conv_forward) -> None:
    """matches the definition of a convolution on 5 shapes, strides 1-3, paddings 0-2"""
    rng = np.random.default_rng(1)
    for (n, c, h, w), (o, kh, kw), stride, padding in _CONV_CASES:
        x = rng.standard_normal((n, c, h, w))
        weight = rng.standard_normal((o, c, kh, kw))
        bias = rng.standard_normal(o)
        ref = _conv_reference(x, weight, bias, stride, padding)
        y = conv_forward(x.copy(), weight.copy(), bias.copy(), stride, padding)
        _close(
            y,
            ref,
            f"output for x {x.shape}, weight {weight.shape}, stride {stride}, padding {padding}",
        )


@grader("convolution")
def check_conv_backward(conv_backward) -> None:
    """dx, dw, db match the convolution's gradients on 5 shapes"""
    rng = np.random.default_rng(2)
    for (n, c, h, w), (o, kh, kw), stride, padding in _CONV_CASES:
        x = rng.standard_normal((n, c, h, w))
        weight = rng.standard_normal((o, c, kh, kw))
        out_h, out_w = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
        dy = rng.standard_normal((n, o, out_h, out_w))
        refs = _conv_grads_reference(dy, x, weight, stride, padding)
        got = conv_backward(dy.copy(), x.copy(), weight.copy(), stride, padding)
        assert len(got) == 3, "conv_backward must return (dx, dw, db)"
        case = f"x {x.shape}, weight {weight.shape}, stride {stride}, padding {padding}"
        for mine, ref, what in zip(got, refs, ("dx", "dw", "db")):
            _close(mine, ref, f"{what} for {case}")


# ----------------------------------------------------------------------- notebook 02


def distinct_values(shape, rng) -> np.ndarray:
    """Shuffled, well-separated values: a max pool over them has no ties."""
    return rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) / 10.0


@grader("max pooling")
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
        _close(
            maxpool_backward(dy.copy(), x.copy(), k, s),
            ref,
            f"dx for x {shape}, kernel {k}, stride {s}",
        )


def _slide_classifier(x, weight, bias, k, order):
    """Scores of a fully connected classifier on every k x k window of x (stride 1)."""
    n, c, h, w = x.shape
    out = np.empty((n, weight.shape[0], h - k + 1, w - k + 1))
    for r in range(h - k + 1):
        for s in range(w - k + 1):
            window = x[:, :, r : r + k, s : s + k]
            if order == "hwc":
                window = window.transpose(0, 2, 3, 1)
            out[:, :, r, s] = window.reshape(n, -1) @ weight.T + bias
    return out


@grader("convolutionalising")
def check_fc_as_conv(fc_as_conv) -> None:
    """its heatmap equals the classifier slid over every window, flatten orders chw and hwc"""
    rng = np.random.default_rng(7)
    for (n, c, h, w), k, f in [((2, 3, 6, 7), 3, 4), ((1, 2, 5, 5), 2, 3), ((1, 4, 7, 9), 4, 2)]:
        for order in ("chw", "hwc"):
            weight = rng.standard_normal((f, k * k * c))
            bias = rng.standard_normal(f)
            x = rng.standard_normal((n, c, h, w))
            ref = _slide_classifier(x, weight, bias, k, order)
            got = fc_as_conv(weight.copy(), bias.copy(), c, k, order)
            assert len(got) == 2, "fc_as_conv must return (conv_weight, conv_bias)"
            cw, cb = (np.asarray(a) for a in got)
            assert cw.shape == (f, c, k, k), (
                f"conv weight shape {cw.shape}, expected {(f, c, k, k)}"
            )
            assert cb.shape == (f,), f"conv bias shape {cb.shape}, expected {(f,)}"
            heat = _conv_reference(x, cw, cb, 1, 0)
            _close(heat, ref, f"heatmap for flatten order {order!r}, x {x.shape}, k {k}")


# ----------------------------------------------------------------------- notebook 03


@grader("the bilinear kernel")
def check_bilinear_kernel(bilinear) -> None:
    """equals the bilinear upsampling kernel for k = 1..8, 16 and 64"""
    from minifcn.nn import bilinear_kernel

    for k in [*range(1, 9), 16, 64]:
        ref = bilinear_kernel(k, np.float64)
        _close(bilinear(k), ref, f"kernel size {k}")


@grader("convolution")
def check_transposed_conv(conv_transpose) -> None:
    """matches minifcn.nn.ConvTranspose2d for 5 kernel/stride/padding settings"""
    from minifcn.nn import ConvTranspose2d

    rng = np.random.default_rng(4)
    for (n, i, o, h, w), k, s, p in [
        ((2, 3, 2, 3, 3), 4, 2, 1),
        ((1, 2, 3, 4, 4), 3, 2, 0),
        ((1, 1, 1, 2, 2), 2, 1, 0),
        ((2, 2, 2, 3, 3), 16, 8, 4),
        ((1, 2, 3, 3, 4), 3, 3, 1),
    ]:
        x = rng.standard_normal((n, i, h, w))
        layer = ConvTranspose2d(i, o, k, stride=s, padding=p, init="kaiming").astype(np.float64)
        layer.weight.data[...] = rng.standard_normal(layer.weight.data.shape)
        ref = layer(x)
        _close(
            conv_transpose(x.copy(), layer.weight.data.copy(), s, p),
            ref,
            f"output for x {x.shape}, kernel {k}, stride {s}, padding {p}",
        )


# ----------------------------------------------------------------------- notebook 04


def _paper_like(first_padding: int):
    """A paper-geometry backbone with one channel per layer (geometry only)."""
    from minifcn.models import PAPER

    return replace(
        PAPER, name="paper-geometry", widths=(1,) * 5, fc_channels=1, first_padding=first_padding
    )


@grader("crop offsets")
def check_crop_offset(crop_offset) -> None:
    """the offset that aligns two coordinate maps, and ValueError where none does"""
    from fractions import Fraction as F

    from minifcn.models.geometry import CoordMap

    cases = [  # big, ref, offset or None (no crop aligns them)
        (CoordMap(F(16), F(-183, 2)), CoordMap(F(16), F(-23, 2)), 5),
        (CoordMap(F(8), F(-191, 2)), CoordMap(F(8), F(-47, 2)), 9),
        (CoordMap(F(1), F(-31)), CoordMap(F(1), F(0)), 31),
        (CoordMap(F(32), F(-5)), CoordMap(F(32), F(59)), 2),
        (CoordMap(F(4), F(3)), CoordMap(F(4), F(3)), 0),
        (CoordMap(F(16), F(-3)), CoordMap(F(16), F(-11)), None),  # big starts after ref
        (CoordMap(F(16), F(-3)), CoordMap(F(8), F(5)), None),  # different strides
        (CoordMap(F(8), F(-3)), CoordMap(F(8), F(3)), None),  # 6 / 8: not a whole pixel
    ]
    for big, ref, expected in cases:
        if expected is None:
            try:
                got = crop_offset(big, ref)
            except ValueError:
                continue
            raise AssertionError(f"big {big}, ref {ref}: no crop aligns them, got {got!r}")
        got = crop_offset(big, ref)
        assert isinstance(got, (int, np.integer)) and not isinstance(got, bool), (
            f"big {big}, ref {ref}: return an int, got {got!r}"
        )
        assert got == expected, f"big {big}, ref {ref}: got {got}, expected {expected}"


@grader("crop offsets")
def check_crop_offsets(crop_offsets) -> None:
    """equals FCN8s(...).crop_offsets for first paddings 69-164, ValueError below 69"""
    from minifcn.models import FCN8s

    for p in [50, 68, 69, 70, 80, 100, 117, 164]:
        try:
            ref = FCN8s(2, _paper_like(p)).crop_offsets
        except ValueError:
            ref = None
        if ref is None:
            try:
                got = crop_offsets(p)
            except ValueError:
                continue
            raise AssertionError(
                f"first padding {p}: FCN-8s cannot be built (the upsampled scores would not "
                f"cover the image), so crop_offsets must raise ValueError; it returned {got!r}"
            )
        got = crop_offsets(p)
        assert dict(got) == ref, f"first padding {p}: got {dict(got)}, expected {ref}"


def _crop_cases(rng):
    for (n, c), (big_h, big_w), (h, w), (oy, ox) in [
        ((2, 3), (9, 8), (4, 5), (3, 2)),
        ((1, 2), (7, 7), (7, 7), (0, 0)),
        ((1, 1), (12, 10), (3, 4), (5, 1)),
        ((2, 2), (6, 11), (2, 3), (0, 7)),
    ]:
        yield rng.standard_normal((n, c, h, w)), rng.standard_normal((n, c, big_h, big_w)), (oy, ox)


@grader("crop and fuse")
def check_crop_fuse_forward(crop_fuse_forward) -> None:
    """a + (b cut to a's size at (row, column) offset), on 4 shapes and offsets"""
    rng = np.random.default_rng(8)
    for a, b, (oy, ox) in _crop_cases(rng):
        h, w = a.shape[2:]
        ref = a + b[:, :, oy : oy + h, ox : ox + w]
        got = crop_fuse_forward(a.copy(), b.copy(), (oy, ox))
        _close(got, ref, f"fused map for a {a.shape}, b {b.shape}, offset {(oy, ox)}")


@grader("crop and fuse")
def check_crop_fuse_backward(crop_fuse_backward) -> None:
    """(da, db): dy for a, dy inside the window of b and zeros outside it, on 4 shapes"""
    rng = np.random.default_rng(9)
    for a, b, (oy, ox) in _crop_cases(rng):
        h, w = a.shape[2:]
        dy = rng.standard_normal(a.shape)
        db = np.zeros(b.shape)
        db[:, :, oy : oy + h, ox : ox + w] = dy
        got = crop_fuse_backward(dy.copy(), b.shape, (oy, ox))
        assert len(got) == 2, "crop_fuse_backward must return (da, db)"
        case = f"a {a.shape}, b {b.shape}, offset {(oy, ox)}"
        _close(got[0], dy, f"da for {case}")
        _close(got[1], db, f"db for {case}")


# ----------------------------------------------------------------------- notebook 05


@grader("the segmentation scores")
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
            assert abs(got[key] - ref[key]) < 1e-12, (
                f"{key} = {got[key]:.6f}, expected {ref[key]:.6f} for the confusion matrix "
                f"{hist.tolist()}"
            )


def _trained_looking_fcn32s(config, rng):
    """An FCN-32s whose every parameter is random and non-zero (as after training)."""
    from minifcn.models import FCN32s

    model = FCN32s(3, config, rng=0)
    for _, p in model.named_parameters():
        p.data[...] = rng.standard_normal(p.data.shape).astype(p.data.dtype) * 0.1
    return model


@grader("staged initialisation")
def check_fcn16s_from_fcn32s(fcn16s_from_fcn32s) -> None:
    """copies the backbone and score_fr, keeps score_pool4 at zero and both upsamplings bilinear"""
    from minifcn.models import MINI, FCN16s
    from minifcn.nn import bilinear_weight

    rng = np.random.default_rng(10)
    fcn32 = _trained_looking_fcn32s(MINI, rng)
    before = {name: p.data.copy() for name, p in fcn32.named_parameters()}
    fresh = FCN16s(3, MINI, rng=1)
    net = fcn16s_from_fcn32s(fcn32)
    assert isinstance(net, FCN16s), f"return an FCN16s, got {type(net).__name__}"
    assert net.config == fcn32.config, "the FCN-16s must have the FCN-32s's backbone configuration"
    for name, p in fcn32.named_parameters():
        assert np.array_equal(p.data, before[name]), f"{name} of the FCN-32s was changed"
    ours = dict(net.named_parameters())
    for name in fcn32.backbone + ["score_fr"]:
        for kind in ("weight", "bias"):
            key = f"{name}.{kind}"
            if key in ours:
                assert np.array_equal(ours[key].data, before[key]), (
                    f"{key} must carry over from the FCN-32s unchanged"
                )
                theirs = dict(fcn32.named_parameters())[key].data
                assert not np.shares_memory(ours[key].data, theirs), (
                    f"{key} shares memory with the FCN-32s: copy the values"
                )
    for key in ("score_pool4.weight", "score_pool4.bias"):
        assert not np.any(ours[key].data), f"{key} must start at zero"
    c = net.num_classes
    for layer, k in (("upscore2", 4), ("upscore16", 32)):
        assert np.array_equal(ours[f"{layer}.weight"].data, bilinear_weight(c, c, k)), (
            f"{layer}.weight must be the bilinear {k}x{k} kernel a new FCN16s starts with"
        )
    assert set(ours) == {name for name, _ in fresh.named_parameters()}


# ----------------------------------------------------------------------- notebook 06


@grader("the softmax")
def check_softmax_any_device(softmax_fn) -> None:
    """equals the softmax over axis 1, stays finite for scores of 1e4, keeps the array type"""
    from minifcn.backend import as_numpy, cupy_module, gpu_available

    rng = np.random.default_rng(6)
    scores64 = rng.standard_normal((2, 5, 4, 3))
    e = np.exp(scores64 - scores64.max(axis=1, keepdims=True))
    ref = e / e.sum(axis=1, keepdims=True)
    _close(softmax_fn(scores64.copy()), ref, "softmax of float64 scores", tol=1e-12)
    scores = scores64.astype(np.float32)
    _close(softmax_fn(scores.copy()), ref, "softmax of float32 scores", tol=1e-5)
    big = scores64 * 1e4
    out = np.asarray(softmax_fn(big))
    assert np.isfinite(out).all(), "scores of size 1e4 give inf or NaN: subtract the maximum first"
    assert type(softmax_fn(scores)) is np.ndarray, "a NumPy input must give a NumPy output"
    if gpu_available():
        cp = cupy_module()
        out = softmax_fn(cp.asarray(scores))
        assert isinstance(out, cp.ndarray), "a CuPy input must give a CuPy output"
        _close(as_numpy(out), ref, "softmax on the GPU", 1e-5)


# ----------------------------------------------------------------------- notebook 07 (capstone)
# The functions a layer runs (minifcn.dispatch.GROUPS), with the plain functions' contract:
# the checks compare them with minifcn/nn's plain functions, in float64 and in float32.


def _plain(module: str, name: str):
    return getattr(importlib.import_module(f"minifcn.nn.{module}"), name)


def _dtype_kept(out, x, what):
    assert np.asarray(out).dtype == x.dtype, (
        f"{what}: a {x.dtype} input gave a {np.asarray(out).dtype} result; keep the input's "
        "dtype (the network trains in float32)"
    )


_LAYER_CONV_CASES = [  # (N, C, H, W), (O, k), stride, padding: FCN's convolutions and others
    ((2, 3, 9, 9), (4, 3), 1, 1),
    ((1, 4, 7, 6), (3, 1), 1, 0),
    ((2, 2, 10, 10), (3, 3), 2, 1),
    ((1, 3, 8, 8), (2, 7), 1, 3),
    ((1, 2, 5, 7), (2, 2), 1, 4),
]


@grader("convolution")
def check_layer_conv2d(conv2d, conv2d_input_grad, conv2d_weight_grad) -> None:
    """y, dx and dW equal the plain Conv2d functions' (5 cases, float64 and float32)"""
    ref_fwd, ref_dx, ref_dw = (
        _plain("conv", n) for n in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad")
    )
    rng = np.random.default_rng(11)
    for (n, c, h, w), (o, k), stride, padding in _LAYER_CONV_CASES:
        x = rng.standard_normal((n, c, h, w))
        weight = rng.standard_normal((o, c, k, k))
        y_ref, col_ref = ref_fwd(x, weight, stride, padding)
        dy = rng.standard_normal(y_ref.shape)
        dx_ref = ref_dx(dy, weight, h, w, stride, padding)
        dw_ref = ref_dw(col_ref, dy).reshape(weight.shape)
        case = f"x {x.shape}, weight {weight.shape}, stride {stride}, padding {padding}"
        got = conv2d(x.copy(), weight.copy(), stride, padding)
        assert len(got) == 2, "conv2d must return (y, col)"
        _close(got[0], y_ref, f"conv2d's y for {case}")
        dw = np.asarray(conv2d_weight_grad(got[1], dy.copy()))
        assert dw.size == weight.size, f"conv2d_weight_grad: {dw.shape} for weight {weight.shape}"
        _close(dw.reshape(weight.shape), dw_ref, f"conv2d_weight_grad for {case}")
        _close(
            conv2d_input_grad(dy.copy(), weight.copy(), h, w, stride, padding),
            dx_ref,
            f"conv2d_input_grad for {case}",
        )
        x32, w32, dy32 = (a.astype(np.float32) for a in (x, weight, dy))
        y32, col32 = conv2d(x32, w32, stride, padding)
        _dtype_kept(y32, x32, "conv2d")
        _dtype_kept(conv2d_weight_grad(col32, dy32), x32, "conv2d_weight_grad")
        _dtype_kept(conv2d_input_grad(dy32, w32, h, w, stride, padding), x32, "conv2d_input_grad")


@grader("max pooling")
def check_layer_max_pool2d(max_pool2d, max_pool2d_backward) -> None:
    """y and dx equal the plain MaxPool2d functions' (ceil mode, windows over the edge)"""
    from minifcn.nn.pool import pool_output_size

    ref_fwd, ref_bwd = _plain("pool", "max_pool2d"), _plain("pool", "max_pool2d_backward")
    rng = np.random.default_rng(12)
    for shape, k, s, p in [
        ((2, 3, 8, 8), 2, 2, 0),
        ((1, 2, 7, 9), 2, 2, 0),
        ((1, 2, 9, 7), 3, 2, 1),
        ((2, 1, 5, 5), 3, 3, 0),
    ]:
        x = distinct_values(shape, rng)
        out_h = pool_output_size(shape[2], k, s, p, True)
        out_w = pool_output_size(shape[3], k, s, p, True)
        y_ref, arg_ref = ref_fwd(x, k, s, p, out_h, out_w)
        dy = rng.standard_normal(y_ref.shape)
        dx_ref = ref_bwd(dy, arg_ref, x.shape, k, s, p)
        case = f"x {shape}, kernel {k}, stride {s}, padding {p}"
        got = max_pool2d(x.copy(), k, s, p, out_h, out_w)
        assert len(got) == 2, "max_pool2d must return (y, arg)"
        _close(got[0], y_ref, f"max_pool2d's y for {case}")
        _close(
            max_pool2d_backward(dy.copy(), got[1], x.shape, k, s, p),
            dx_ref,
            f"max_pool2d_backward for {case}",
        )
        x32 = x.astype(np.float32)
        y32, arg32 = max_pool2d(x32, k, s, p, out_h, out_w)
        _dtype_kept(y32, x32, "max_pool2d")
        _dtype_kept(
            max_pool2d_backward(dy.astype(np.float32), arg32, x.shape, k, s, p),
            x32,
            "max_pool2d_backward",
        )


@grader("convolution")
def check_layer_conv_transpose2d(conv_transpose2d, conv_transpose2d_backward) -> None:
    """y, dx and dW equal the plain ConvTranspose2d functions' (FCN's 4/2, 16/8, 64/32)"""
    ref_fwd = _plain("conv_transpose", "conv_transpose2d")
    ref_bwd = _plain("conv_transpose", "conv_transpose2d_backward")
    rng = np.random.default_rng(13)
    for (n, i, o, h, w), k, s, p in [
        ((2, 3, 3, 4, 4), 4, 2, 0),
        ((1, 2, 2, 3, 3), 16, 8, 0),
        ((1, 2, 2, 2, 2), 64, 32, 0),
        ((1, 3, 2, 3, 5), 3, 2, 1),
    ]:
        x = rng.standard_normal((n, i, h, w))
        weight = rng.standard_normal((i, o, k, k))
        y_ref, saved_ref = ref_fwd(x, weight, s, p)
        dy = rng.standard_normal(y_ref.shape)
        dx_ref, dw_ref = ref_bwd(saved_ref, dy, weight, s, p, True)
        case = f"x {x.shape}, weight {weight.shape}, stride {s}, padding {p}"
        got = conv_transpose2d(x.copy(), weight.copy(), s, p)
        assert len(got) == 2, "conv_transpose2d must return (y, saved)"
        _close(got[0], y_ref, f"conv_transpose2d's y for {case}")
        back = conv_transpose2d_backward(got[1], dy.copy(), weight.copy(), s, p, True)
        assert len(back) == 2, "conv_transpose2d_backward must return (dx, dW or None)"
        _close(back[0], dx_ref, f"conv_transpose2d_backward's dx for {case}")
        _close(back[1], dw_ref, f"conv_transpose2d_backward's dW for {case}")
        frozen = conv_transpose2d_backward(got[1], dy.copy(), weight.copy(), s, p, False)
        assert frozen[1] is None, "with weight_grad=False (a frozen upsampling) dW must be None"
        _close(frozen[0], dx_ref, f"dx with weight_grad=False for {case}")
        x32, w32 = x.astype(np.float32), weight.astype(np.float32)
        _dtype_kept(conv_transpose2d(x32, w32, s, p)[0], x32, "conv_transpose2d")


@grader("crop and fuse")
def check_layer_crop2d(crop2d, crop2d_backward) -> None:
    """the window and its gradient equal the plain Crop functions' (4 offsets)"""
    ref_fwd, ref_bwd = _plain("crop", "crop2d"), _plain("crop", "crop2d_backward")
    rng = np.random.default_rng(14)
    for shape, (oy, ox), (h, w) in [
        ((2, 3, 9, 8), (3, 2), (4, 5)),
        ((1, 2, 7, 7), (0, 0), (7, 7)),
        ((1, 1, 12, 10), (5, 1), (3, 4)),
        ((2, 2, 6, 11), (0, 7), (2, 3)),
    ]:
        x = rng.standard_normal(shape)
        dy = rng.standard_normal((shape[0], shape[1], h, w))
        case = f"x {shape}, offset {(oy, ox)}, window {h}x{w}"
        _close(crop2d(x.copy(), oy, ox, h, w), ref_fwd(x, oy, ox, h, w), f"crop2d for {case}")
        _close(
            crop2d_backward(dy.copy(), shape, oy, ox),
            ref_bwd(dy, shape, oy, ox),
            f"crop2d_backward for {case}",
        )
        _dtype_kept(
            crop2d_backward(dy.astype(np.float32), shape, oy, ox),
            dy.astype(np.float32),
            "crop2d_backward",
        )
