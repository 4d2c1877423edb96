import numpy as np
import pytest

from fedlib.metrics import (
    CHANCE_MARGIN,
    at_chance,
    chance_level,
    confusion_matrix,
    slug,
    summarize_confusion,
)

CLASSES = ("pneumonia", "normal", "COVID-19")


def test_confusion_matrix_counts_true_rows_predicted_columns():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_confusion_matrix_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        confusion_matrix([0, 1, 2], [0, 1], 3)


def test_summary_against_hand_computed_values():
    # Prepare: true pneumonia 10 (8 right, 2 called normal), normal 20 (18 right, 2 called covid),
    # covid 5 (3 right, 2 called pneumonia).
    cm = np.array([[8, 2, 0], [0, 18, 2], [2, 0, 3]])
    # Execute
    m = summarize_confusion(cm, CLASSES)
    # Assert
    assert m["n"] == 35
    assert m["accuracy"] == pytest.approx(29 / 35)
    assert m["sensitivity_pneumonia"] == pytest.approx(0.8)
    assert m["sensitivity_normal"] == pytest.approx(0.9)
    assert m["sensitivity_covid19"] == pytest.approx(0.6)
    assert m["ppv_pneumonia"] == pytest.approx(8 / 10)
    assert m["ppv_normal"] == pytest.approx(18 / 20)
    assert m["ppv_covid19"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((0.8 + 0.9 + 0.6) / 3)
    assert m["f1_covid19"] == pytest.approx(0.6)


def test_absent_class_is_nan_not_zero():
    cm = np.array([[5, 0, 0], [1, 4, 0], [0, 0, 0]])
    m = summarize_confusion(cm, CLASSES)
    assert np.isnan(m["sensitivity_covid19"])
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.8) / 2)


def test_slug():
    assert slug("COVID-19") == "covid19"


def test_balanced_accuracy_leaves_out_a_class_absent_from_the_truth_even_when_predicted():
    # Prepare: no true COVID-19 image, but two normal images called COVID-19.
    cm = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    # Execute
    m = summarize_confusion(cm, CLASSES)
    # Assert: sensitivities 3/4 and 2/4; COVID-19 has none, so the mean is over two classes
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 0.5) / 2)
    assert m["ppv_covid19"] == 0.0
    assert chance_level(cm) == 0.5


def test_a_constant_prediction_is_at_chance_however_skewed_the_truth():
    # Every image called pneumonia, 20 of 24 truly pneumonia: accuracy 0.833, balanced 1/3.
    cm = np.array([[20, 0, 0], [2, 0, 0], [2, 0, 0]])
    m = summarize_confusion(cm, CLASSES)
    assert m["accuracy"] == pytest.approx(20 / 24)
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)
    assert chance_level(cm) == pytest.approx(1 / 3)
    assert at_chance(m["balanced_accuracy"], chance_level(cm))


def test_at_chance_is_within_the_margin_above_chance_and_anything_below():
    assert CHANCE_MARGIN == 0.05
    assert at_chance(0.375, 1 / 3)  # 1/3 + 0.042
    assert at_chance(0.1, 1 / 3)  # worse than chance is no better
    assert not at_chance(0.39, 1 / 3)  # 1/3 + 0.057
    assert not at_chance(float("nan"), 1 / 3)  # no test images: nothing to flag
