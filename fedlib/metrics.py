"""Classification metrics from a confusion matrix.

Everything is derived from one integer matrix ``cm[true, predicted]`` so that
train and test counts can never be mixed (the authors' per-label accuracy
accumulated both together). The paper's "per-label accuracy" is the per-class
sensitivity (recall): correct predictions of a class over its true count.
"""

from __future__ import annotations

import numpy as np

# A model is "at chance" when its balanced accuracy is at most CHANCE_MARGIN above 1/k,
# k = the classes present in the truth. Predicting one class for every image scores
# exactly 1/k however skewed the test set is (its plain accuracy is that class's share:
# 0.815 on a set with 81.5% of one class), so such a model has learned nothing the
# accuracy could show. 0.05 leaves room for a few lucky images on a small test set.
CHANCE_MARGIN = 0.05


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Integer matrix with rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    flat = y_true * num_classes + y_pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # A class that never occurs (or is never predicted) has no defined rate: NaN, not 0,
    # so that averages and plots do not silently count it as a failure.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def slug(name: str) -> str:
    """Column-friendly class name: 'COVID-19' -> 'covid19'."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def summarize_confusion(cm: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
    """Accuracy, balanced accuracy and per-class sensitivity, PPV and F1.

    Balanced accuracy is the mean sensitivity over the classes present in the
    truth (a class with no true image has no sensitivity and is left out).

    Keys: ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``n``, and for each
    class ``sensitivity_<slug>``, ``ppv_<slug>``, ``f1_<slug>`` (slug of the
    class name, e.g. ``covid19``).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    true_counts = cm.sum(axis=1)
    pred_counts = cm.sum(axis=0)
    sens = _ratio(tp, true_counts)
    ppv = _ratio(tp, pred_counts)
    with np.errstate(invalid="ignore"):
        f1 = np.where(sens + ppv > 0, 2 * sens * ppv / (sens + ppv), 0.0)
    f1 = np.where(np.isnan(sens) | np.isnan(ppv), np.nan, f1)
    total = cm.sum()
    out: dict[str, float] = {
        "n": int(total),
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "balanced_accuracy": float(np.nanmean(sens)) if np.any(~np.isnan(sens)) else float("nan"),
        "macro_f1": float(np.nanmean(f1)) if np.any(~np.isnan(f1)) else float("nan"),
    }
    for i, name in enumerate(class_names):
        key = slug(name)
        out[f"sensitivity_{key}"] = float(sens[i])
        out[f"ppv_{key}"] = float(ppv[i])
        out[f"f1_{key}"] = float(f1[i])
    return out


def chance_level(cm) -> float:
    """Balanced accuracy of a constant prediction: 1 / (classes present in the truth)."""
    present = int((np.asarray(cm).sum(axis=1) > 0).sum())
    return 1.0 / present if present else float("nan")


def at_chance(balanced_accuracy: float, chance: float, margin: float = CHANCE_MARGIN) -> bool:
    """Whether a balanced accuracy is no better than chance (see ``CHANCE_MARGIN``)."""
    return bool(balanced_accuracy <= chance + margin) if not np.isnan(balanced_accuracy) else False
