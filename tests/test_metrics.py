"""Confusion matrix and the FCN scores, against values worked out by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from minifcn.backend import gpu_available
from minifcn.inference.metrics import SegmentationMetrics, confusion_matrix, scores_from_confusion

# Ground truth and prediction over 10 pixels, 3 classes:
#   gt:   0 0 0 0 1 1 1 2 2 2
#   pred: 0 0 0 1 1 1 2 2 2 0
GT = np.array([[0, 0, 0, 0, 1], [1, 1, 2, 2, 2]])
PRED = np.array([[0, 0, 0, 1, 1], [1, 2, 2, 2, 0]])
HIST = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 2]])


def test_confusion_matrix_rows_are_ground_truth_columns_prediction():
    hist = confusion_matrix(PRED, GT, 3)
    assert hist.dtype == np.int64
    np.testing.assert_array_equal(hist, HIST)


def test_scores_match_hand_computation():
    s = scores_from_confusion(HIST)
    # n_ii = 3, 2, 2; t_i = 4, 3, 3; predicted = 4, 3, 3
    assert s["pixel_accuracy"] == pytest.approx(7 / 10)
    assert s["mean_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    ius = [3 / (4 + 4 - 3), 2 / (3 + 3 - 2), 2 / (3 + 3 - 2)]  # 0.6, 0.5, 0.5
    assert s["per_class_iu"] == pytest.approx(ius)
    assert s["mean_iu"] == pytest.approx(sum(ius) / 3)
    assert s["fw_iu"] == pytest.approx((4 * 0.6 + 3 * 0.5 + 3 * 0.5) / 10)


def test_ignore_pixels_are_not_counted():
    gt = GT.copy()
    gt[0, 0] = 255
    pred = PRED.copy()
    pred[0, 0] = 2  # would be an error if counted
    hist = confusion_matrix(pred, gt, 3)
    expected = HIST.copy()
    expected[0, 0] -= 1
    np.testing.assert_array_equal(hist, expected)


def test_metrics_accumulate_one_matrix_over_the_set():
    m = SegmentationMetrics(3)
    m.update(PRED[:1], GT[:1])  # (N, H, W) batches ...
    m.update(PRED[1], GT[1])  # ... or single (H, W) maps
    np.testing.assert_array_equal(m.confusion, HIST)
    assert m.compute()["pixel_accuracy"] == pytest.approx(0.7)
    m.reset()
    assert m.confusion.sum() == 0


def test_absent_class_is_nan_and_skipped_but_false_alarm_counts():
    # class 2 absent everywhere; class 3 predicted but not in the ground truth
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 3])
    m = SegmentationMetrics(4)
    m.update(pred, gt)
    s = m.compute()
    iu = s["per_class_iu"]
    assert iu[0] == 1.0 and iu[1] == pytest.approx(0.5) and math.isnan(iu[2]) and iu[3] == 0.0
    assert s["mean_iu"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert s["mean_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert math.isnan(s["per_class_accuracy"][3])


def test_label_out_of_range_is_named():
    with pytest.raises(ValueError, match="label value 7"):
        confusion_matrix(np.zeros(3, int), np.array([0, 7, 255]), 3)
    with pytest.raises(ValueError, match="prediction value -1"):
        confusion_matrix(np.array([0, -1, 0]), np.zeros(3, int), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros(3, int), np.zeros(4, int), 3)


def test_format_table_lists_every_class():
    m = SegmentationMetrics(3, class_names=("background", "disk", "cross"))
    m.update(PRED, GT)
    table = m.format_table()
    for word in ("background", "disk", "cross", "mean_iu", "60.00", "50.00"):
        assert word in table


def test_empty_metrics_give_nan_without_error():
    s = SegmentationMetrics(2).compute()
    assert math.isnan(s["pixel_accuracy"]) and math.isnan(s["mean_iu"])


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")
def test_confusion_matrix_on_gpu_matches_cpu():
    from minifcn.backend import to_device

    hist = confusion_matrix(to_device(PRED, "gpu"), to_device(GT, "gpu"), 3)
    assert isinstance(hist, np.ndarray)
    np.testing.assert_array_equal(hist, HIST)


# An asymmetric matrix: each class has a different number of ground-truth and predicted
# pixels, so weighting by one or the other gives different scores.
#   rows (truth) 0: 5 pixels, 1: 2, 2: 3; columns (prediction) 0: 3, 1: 5, 2: 2
ASYM = np.array([[3, 2, 0], [0, 2, 0], [0, 1, 2]])


def test_frequency_weighted_iu_weights_by_ground_truth_frequency():
    s = scores_from_confusion(ASYM)
    ius = [3 / (5 + 3 - 3), 2 / (2 + 5 - 2), 2 / (3 + 2 - 2)]  # 0.6, 0.4, 2/3
    assert s["per_class_iu"] == pytest.approx(ius)
    assert s["fw_iu"] == pytest.approx((5 * ius[0] + 2 * ius[1] + 3 * ius[2]) / 10)
    by_prediction = (3 * ius[0] + 5 * ius[1] + 2 * ius[2]) / 10
    assert s["fw_iu"] != pytest.approx(by_prediction)


def test_accuracies_divide_by_ground_truth_counts_not_predictions():
    s = scores_from_confusion(ASYM)
    assert s["per_class_accuracy"] == pytest.approx([3 / 5, 2 / 2, 2 / 3])
    assert s["mean_accuracy"] == pytest.approx((3 / 5 + 1 + 2 / 3) / 3)
    assert s["pixel_accuracy"] == pytest.approx(7 / 10)


def test_confusion_matrix_is_not_transposed_for_an_asymmetric_case():
    gt = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 3), ASYM)


def test_custom_ignore_index_and_negative_labels():
    gt = np.array([0, 1, -1, 1])
    pred = np.array([0, 1, 1, 0])
    hist = confusion_matrix(pred, gt, 2, ignore_index=-1)
    np.testing.assert_array_equal(hist, [[1, 0], [1, 1]])
    m = SegmentationMetrics(2, ignore_index=-1)
    m.update(pred, gt)
    np.testing.assert_array_equal(m.confusion, hist)
    with pytest.raises(ValueError, match="label value 255"):
        confusion_matrix(pred, np.array([0, 1, 255, 1]), 2, ignore_index=-1)


def test_metrics_reject_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be positive"):
        SegmentationMetrics(0)
    with pytest.raises(ValueError, match="2 class names given for 3 classes"):
        SegmentationMetrics(3, class_names=("a", "b"))
    with pytest.raises(ValueError, match="integer class ids"):
        confusion_matrix(np.zeros(3), np.zeros(3, int), 3)
    with pytest.raises(ValueError, match="prediction value 3"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_format_table_shows_undefined_entries_as_a_dash():
    m = SegmentationMetrics(3, class_names=("a", "b", "c"))
    m.update(np.array([0, 1]), np.array([0, 1]))  # class c never occurs
    lines = m.format_table().splitlines()
    assert lines[0].split() == ["class", "IU", "acc"]
    c_line = next(line for line in lines if line.startswith("c "))
    assert c_line.split() == ["c", "-", "-"]
    assert next(line for line in lines if line.startswith("a ")).split() == [
        "a",
        "100.00",
        "100.00",
    ]
    assert next(line for line in lines if line.startswith("mean_iu")).split()[1] == "100.00"
    assert SegmentationMetrics(2).class_names == ("class_0", "class_1")


# ------------------------------ edge cases: one pixel, undefined scores, defaults, messages


def test_a_single_pixel_set_scores_one_everywhere():
    s = scores_from_confusion(np.array([[1, 0], [0, 0]]))
    assert s["pixel_accuracy"] == 1.0 and s["fw_iu"] == 1.0 and s["mean_iu"] == 1.0


@pytest.mark.parametrize(
    "hist", [np.zeros((3, 3), dtype=np.int64), np.array([[2, 0, 0], [0, 0, 0], [1, 0, 0]])]
)
def test_undefined_scores_are_nan_without_any_warning(hist):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 is ever evaluated
        s = scores_from_confusion(hist)
    if hist.sum() == 0:
        assert all(math.isnan(s[k]) for k in ("pixel_accuracy", "mean_accuracy", "mean_iu"))
        assert math.isnan(s["fw_iu"])
    else:
        assert math.isnan(s["per_class_accuracy"][1]) and math.isnan(s["per_class_iu"][1])
        assert s["fw_iu"] == pytest.approx(2 / 3 * 2 / 3)


def test_metrics_default_to_ignoring_255_and_accept_a_single_class():
    m = SegmentationMetrics(2)
    m.update(np.array([[0, 1, 1]]), np.array([[0, 255, 1]]))
    np.testing.assert_array_equal(m.confusion, [[1, 0], [0, 1]])
    one = SegmentationMetrics(1)
    one.update(np.zeros((2, 2), dtype=np.int64), np.zeros((2, 2), dtype=np.int64))
    assert one.compute()["mean_iu"] == 1.0


def test_out_of_range_messages_name_the_array_and_only_labels_mention_the_ignore_label():
    with pytest.raises(ValueError, match=r"^prediction value 5 is not a class id in \[0, 3\)$"):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), 3)
    with pytest.raises(
        ValueError, match=r"^label value 7 is not a class id in \[0, 3\) or the ignore label 255$"
    ):
        confusion_matrix(np.array([0, 1]), np.array([0, 7]), 3)


@pytest.mark.parametrize(
    "names,width", [(("bg", "cat"), 12), (("bg", "a_very_long_class_name"), 22)]
)
def test_format_table_columns_line_up_with_the_separators(names, width):
    m = SegmentationMetrics(2, class_names=names)
    m.update(np.array([0, 1]), np.array([0, 1]))
    lines = m.format_table().splitlines()
    sep = "-" * (width + 16)  # class column at least 12 wide, then two 6-wide columns
    assert lines[1] == sep and lines[2 + len(names)] == sep
    assert all(len(line) == len(sep) for line in lines[: 2 + len(names)])
