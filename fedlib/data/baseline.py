"""The source-only baseline: what knowing an image's source, and nothing else, scores.

In COVIDx each source (cohen, rsna, sirm, ...) holds its own mix of classes, and in the
synthetic set each hospital has its own marker and class mix: a model can score by
recognising the source instead of the disease. The baseline measures how far that goes:
it learns the most common class of each source on the train split (ties: the lower class
index) and predicts it for every test image of that source; a source the train split does
not have gets the train split's most common class. It reads the split files only.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .covidx import Layout, Record, _split_file, as_task, class_names, parse_split_file, positive_class


def source_only(train: list[Record], test: list[Record]) -> dict | None:
    """Accuracy, balanced accuracy (mean sensitivity over the test set's classes) and the
    positive class's sensitivity of the per-source majority rule; None when the train split
    names fewer than two sources (there is nothing to tell apart)."""
    sources = {r.source for r in train} - {"unknown"}
    if len(sources) < 2 or not test:
        return None
    classes = class_names(train[0].task)
    overall = _majority(train)
    rule = {s: _majority([r for r in train if r.source == s]) for s in sorted(sources)}
    truth = np.array([r.label for r in test])
    guess = np.array([rule.get(r.source, overall) for r in test])
    present = sorted(set(truth.tolist()))
    sensitivity = {c: float((guess[truth == c] == c).mean()) for c in present}
    positive = classes.index(positive_class(classes))
    return {
        "accuracy": float((guess == truth).mean()),
        "balanced_accuracy": float(np.mean(list(sensitivity.values()))),
        "positive_sensitivity": sensitivity.get(positive, float("nan")),
        "positive_class": classes[positive],
        "rule": {s: classes[c] for s, c in rule.items()},
    }


def source_only_of(root, layout: Layout | None = None) -> dict | None:
    """``source_only`` from a COVIDx folder's train and test split files."""
    layout = layout if layout is not None else Layout()
    records = {}
    for split in ("train", "test"):
        path = _split_file(root, split, layout)
        records[split] = as_task(parse_split_file(path), layout.task, path)
    return source_only(records["train"], records["test"])


def _majority(records: list[Record]) -> int:
    counts = Counter(r.label for r in records)
    return max(sorted(counts), key=lambda c: counts[c])  # the lower index among ties
