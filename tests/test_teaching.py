"""The exercise graders of course.teaching pass the reference solutions and fail wrong answers.

The reference solutions live in notebooks/solutions/ (the notebooks never import them).
Each check must accept the solution, reject a plausible mistake, and report a stub that
still raises NotImplementedError as "not written yet" rather than crash the notebook.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from minifcn.course import teaching

SOLUTIONS = Path(__file__).resolve().parents[1] / "notebooks" / "solutions"


def load(name):
    spec = importlib.util.spec_from_file_location(f"solutions_{name}", SOLUTIONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nb01, nb02, nb03, nb04, nb05, nb06 = (load(f"nb0{i}") for i in range(1, 7))


# Plausible mistakes, one per exercise.
def conv_forward_without_bias(x, weight, bias, stride, padding):
    return nb01.conv_forward(x, weight, np.zeros_like(bias), stride, padding)


def conv_backward_weight_grad_of_one_image(dy, x, weight, stride, padding):
    dx, _, db = nb01.conv_backward(dy, x, weight, stride, padding)
    _, dw, _ = nb01.conv_backward(dy[:1], x[:1], weight, stride, padding)
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


def bilinear_centred_at_half_k(k):
    factor = (k + 1) // 2
    profile = 1 - np.abs(np.arange(k) - k / 2) / factor
    return np.outer(profile, profile)


def conv_transpose_without_crop(x, weight, stride, padding):
    return nb03.conv_transpose(x, weight, stride, 0)


def crop_offsets_of_the_paper(first_padding):
    return {"score_pool4c": 5, "score_pool3c": 9, "score": 31}


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


def softmax_without_shift(scores):
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(scores.astype(np.float32))
        return e / e.sum(axis=1, keepdims=True)


EXERCISES = [
    (teaching.check_conv_forward, nb01.conv_forward, conv_forward_without_bias),
    (teaching.check_conv_backward, nb01.conv_backward, conv_backward_weight_grad_of_one_image),
    (teaching.check_maxpool_backward, nb02.maxpool_backward, maxpool_backward_floor_mode),
    (teaching.check_bilinear_kernel, nb03.bilinear, bilinear_centred_at_half_k),
    (teaching.check_transposed_conv, nb03.conv_transpose, conv_transpose_without_crop),
    (teaching.check_crop_offsets, nb04.crop_offsets, crop_offsets_of_the_paper),
    (teaching.check_segmentation_scores, nb05.segmentation_scores, scores_counting_absent_classes),
    (teaching.check_softmax_any_device, nb06.softmax_any_device, softmax_without_shift),
]
IDS = [check.__name__ for check, _, _ in EXERCISES]


@pytest.mark.parametrize("check, solution, wrong", EXERCISES, ids=IDS)
def test_check_accepts_the_reference_solution(check, solution, wrong):
    check(solution)
    assert teaching.grade(check, solution)


@pytest.mark.parametrize("check, solution, wrong", EXERCISES, ids=IDS)
def test_check_rejects_a_wrong_answer(check, solution, wrong, capsys):
    with pytest.raises(AssertionError):
        check(wrong)
    assert not teaching.grade(check, wrong)
    assert "FAIL" in capsys.readouterr().out


def test_grade_reports_an_unwritten_stub_without_raising(capsys):
    def conv_forward(x, weight, bias, stride, padding):
        raise NotImplementedError

    assert not teaching.grade(teaching.check_conv_forward, conv_forward)
    assert "not written yet" in capsys.readouterr().out


def test_grade_reports_a_crash_as_a_failure(capsys):
    def bilinear(k):
        return 1 / 0

    assert not teaching.grade(teaching.check_bilinear_kernel, bilinear)
    assert "FAIL" in capsys.readouterr().out


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
