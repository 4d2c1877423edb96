"""COVIDx releases as published: one task per folder, a validation split that shares
nothing with train or test, Kaggle's split file names, and the releases ``data-summary``
can name by their counts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from fedlib.data.covidx import Layout, Record, _line_of
from fedlib.errors import UserError, quoted


def check_val_overlap(by_split: dict[str, tuple[list[Record], Path]]) -> None:
    """A validation split must share no image and no patient with train or test: one error
    naming the first overlap."""
    if "val" not in by_split:
        return
    val_records, val_path = by_split["val"]
    for split in ("train", "test"):
        records, path = by_split[split]
        files = {r.filename for r in records}
        patients = {r.patient_id for r in records}
        for r in val_records:
            if r.filename in files or r.patient_id in patients:
                what = f"image {quoted(r.filename)}" if r.filename in files else f"patient {quoted(r.patient_id)}"
                raise UserError(
                    f"{val_path} line {_line_of(val_path, r.filename)}: {what} is also in the {split} split "
                    f"({path}); a validation split must share no image or patient with {split}, fix the split files."
                )


# The split file names of Kaggle's COVIDx CXR-2/3/4 (train.txt, val.txt, test.txt),
# used when the default names are absent and these are present.
KAGGLE_NAMES = {"train_split": "train.txt", "test_split": "test.txt"}


def detect_layout(root, layout: Layout) -> tuple[Layout, str]:
    """The layout with Kaggle's split file names where the default ones are absent and
    Kaggle's are present, and one sentence saying so ("" when nothing changed)."""
    root = Path(root)
    changes = {
        field: name
        for field, name in KAGGLE_NAMES.items()
        if getattr(layout, field) == getattr(Layout, field)
        and not (root / getattr(layout, field)).exists()
        and (root / name).is_file()
    }
    if not changes:
        return layout, ""
    val = (
        "; val.txt is there too: --val-split val.txt uses it as the validation split"
        if layout.val_split is None and (root / "val.txt").is_file()
        else ""
    )
    given = "/".join(getattr(layout, f) for f in changes)
    note = f"{root} has no {given}; using the names of Kaggle's COVIDx releases, {'/'.join(changes.values())}{val}"
    return dataclasses.replace(layout, **changes), note


@dataclass(frozen=True)
class Release:
    """A published COVIDx release as ``data-summary`` recognises it: its distinct images per
    split and class where those are published, else only its total over every split."""

    name: str
    counts: dict | None  # {split: {class: images}}; None: only the total is published
    total: int
    source: str  # where the numbers come from


# Only numbers a source states or that its published split files give (counted as data-summary
# counts: distinct images). COVID-Net's labels/ files counted at commit 65999806546b55ab8adfc32b0cf8f70880c337dc
# of github.com/lindawangg/COVID-Net (2022-02-17).
KNOWN_RELEASES = (
    Release(
        "COVIDx v3, the paper's release (train_split_v3.txt / test_split_v3.txt)",
        {
            "train": {"pneumonia": 5451, "normal": 7966, "COVID-19": 286},
            "test": {"pneumonia": 594, "normal": 885, "COVID-19": 100},
        },
        15282,
        "the counts Liu et al. (2020) give for the COVIDx v3 they trained on",
    ),
    Release(
        "COVIDx9A (COVID-Net labels/train_COVIDx9A.txt, test_COVIDx9A.txt)",
        {
            "train": {"pneumonia": 5555, "normal": 8085, "COVID-19": 16490},
            "test": {"pneumonia": 100, "normal": 100, "COVID-19": 200},
        },
        30530,
        "COVID-Net's split files, counted",
    ),
    Release(
        "COVIDx9B (COVID-Net labels/train_COVIDx9B.txt, test_COVIDx9B.txt)",
        {"train": {"negative": 13992, "positive": 16490}, "test": {"negative": 200, "positive": 200}},
        30882,
        "COVID-Net's split files, counted",
    ),
    Release(
        "COVIDx CXR-3",
        None,
        30386,
        "Pavlova et al., 'COVIDx CXR-3: A Large-Scale, Open-Source Benchmark Dataset of Chest X-ray Images "
        "for Computer-Aided COVID-19 Diagnostics', arXiv:2206.03671 (2022), abstract: 30,386 images",
    ),
    Release(
        "COVIDx CXR-4",
        None,
        84818,
        "Wu et al., 'COVIDx CXR-4: An Expanded Multi-Institutional Open-Source Benchmark Dataset for Chest "
        "X-ray Image-Based Computer-Aided COVID-19 Diagnostics', arXiv:2311.17677 (2023), abstract: 84,818 images",
    ),
)


def known_release(summary: dict) -> Release | None:
    """The published release whose counts ``summary`` (``covidx.summarize``'s) matches, or None."""
    splits = [s for s in ("train", "val", "test") if s in summary]
    counts = {s: {k: n for k, n in summary[s].items() if k != "total"} for s in splits}
    total = sum(summary[s]["total"] for s in splits)
    for release in KNOWN_RELEASES:
        if release.counts is not None and release.counts == counts:
            return release
        if release.counts is None and release.total == total:
            return release
    return None
