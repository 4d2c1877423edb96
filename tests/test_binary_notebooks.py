"""Every notebook renders on a binary COVIDx folder in Kaggle's CXR-4 layout (train/ val/ test/,
train.txt val.txt test.txt; issue 23): ``fedlib reproduce --profile smoke`` with one model and
one seed, then the two-class tables and figures it wrote. The non-IID study's analysis on two
classes is tested on hand-made run folders (its training is the same ``fedlib train``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from binary_data import write_kaggle

from fedlib import reproduce
from fedlib.data.resolve import LayoutNotice
from fedlib.metrics import summarize_confusion
from fedlib.report import non_iid
from fedlib.run.io import write_history, write_json
from fedlib.study import Study, cells

CLASSES = ["negative", "positive"]


def test_reproduce_renders_every_notebook_on_a_binary_folder(tmp_path, monkeypatch):
    data = write_kaggle(tmp_path / "cxr4")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayoutNotice)
        result = reproduce.reproduce(
            profile="smoke",
            data=str(data),
            models=["resnet18"],
            modes=["fedavg", "central"],
            progress=False,
            overrides={"val_split": "val.txt", "val_fraction": 0.0},
        )

    figures, reports = Path(result["figures_dir"]), Path(result["reports_dir"])
    executed = sorted(p.name for p in reports.glob("*.ipynb"))
    assert [n[:2] for n in executed] == ["00", "01", "01", "02", "03", "04"] and not list(reports.glob("*.failed.*"))
    counts = pd.read_csv(figures / "table_class_distribution.csv")
    assert list(counts.columns) == ["split", "negative", "positive", "total"]
    assert counts.set_index("split")["total"].to_dict() == {"train": 30, "val": 8, "test": 12}
    assert list(pd.read_csv(figures / "table3_per_label.csv").columns[2:4]) == CLASSES
    assert "test_positive_sensitivity" in pd.read_csv(figures / "table2_fl_accuracy.csv").columns
    assert "share of positive test images called positive" in (figures / "table2_fl_accuracy.md").read_text()
    for name in ("fig1_class_distribution", "fig4_per_label_accuracy", "fig_confusion", "fig3_fl_loss"):
        assert (figures / f"{name}.png").is_file(), name
    assert sorted(p.stem for p in figures.glob("fig*_gradcam_*.png")) == [
        "fig6_gradcam_negative",
        "fig7_gradcam_positive",
    ]


# ---------------------------------------------------------------- the non-IID study, two classes


def _final(test_cm, client_counts, partition: str) -> dict:
    m = {"loss": 1.0, **summarize_confusion(np.asarray(test_cm), tuple(CLASSES)), "confusion": test_cm}
    final = {
        "classes": CLASSES,
        "clients": len(client_counts),
        "client_class_counts": client_counts,
        "client_sources": [["s0"], ["s1"]],
        "test": m,
        "train": m,
    }
    if partition == "by_source":
        final["test_by_source"] = {"s0": [[3, 1], [1, 3]], "s1": [[4, 0], [2, 2]]}
    return final


def test_the_non_iid_analysis_reads_two_class_runs(tmp_path):
    study = Study(profile="smoke", partitions=(("iid", None), ("by_source", None)), methods=("pooled", "fedavg"))
    test_cm = [[6, 2], [1, 3]]  # positive sensitivity 3/4, negative 6/8
    for name, partition, _, method, seed in cells(study):
        run = tmp_path / name
        run.mkdir()
        write_json(run / "config.json", {"model": "resnet18", "mode": "central" if method == "pooled" else "fedavg",
                                         "seed": seed, "profile": "smoke", "partition": partition})  # fmt: skip
        write_json(run / "final.json", _final(test_cm, [[8, 2], [2, 8]], partition))
        rows = [{"round": r, "test_accuracy": 0.75, "test_balanced_accuracy": 0.75, "test_sensitivity_positive": s,
                 "test_sensitivity_negative": 0.75, "wall_time": 1.0} for r, s in ((1, 0.25), (2, 0.5), (3, 0.75))]  # fmt: skip
        write_history(run / "history.csv", rows)

    df = non_iid.table(study, tmp_path)

    assert df["covid19_sensitivity"].tolist() == pytest.approx([0.5] * len(df))  # positive's, last 3 evaluations
    fed = df[df["method"] == "fedavg"].set_index("partition")
    # iid: each hospital's class mix times the sensitivities: (8 * 6/8 + 2 * 3/4) / 10 = 0.75
    assert fed.loc["iid", "per_hospital"] == [0.75, 0.75]
    assert fed.loc["by_source", "per_hospital"] == [0.75, 0.75]  # its own source's test images: 6/8, 6/8
    for figure in (non_iid.fig_methods(df, "two classes"), non_iid.fig_hospitals(df, "two classes")):
        assert figure.axes
    assert non_iid.reading(df) and len(non_iid.summary(df))
    json.dumps(df.to_dict("records"))  # plain values, as the notebook writes them
