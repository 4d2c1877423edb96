"""The source-only baseline: each source's most common train class, scored on test, printed
by ``fedlib data-summary`` from the split files alone."""

from __future__ import annotations

import json
import math

import pytest
from conftest import write_covidx

from fedlib import cli
from fedlib.data.baseline import source_only
from fedlib.data.covidx import Record


def _records(rows):
    return [Record(f"p{i}", f"{i}.png", label, source) for i, (label, source) in enumerate(rows)]


def test_the_rule_by_hand():
    # train: rsna 3 normal (1) + 1 pneumonia (0); cohen 2 COVID-19 (2) + 1 normal
    train = _records([(1, "rsna")] * 3 + [(0, "rsna")] + [(2, "cohen")] * 2 + [(1, "cohen")])
    # test: rsna 2 normal, 2 pneumonia; cohen 2 COVID-19, 1 normal; sirm (unseen) 1 COVID-19
    test = _records([(1, "rsna")] * 2 + [(0, "rsna")] * 2 + [(2, "cohen")] * 2 + [(1, "cohen"), (2, "sirm")])
    b = source_only(train, test)
    assert b["rule"] == {"cohen": "COVID-19", "rsna": "normal"}
    # predictions: rsna -> normal (2 of 4 right), cohen -> COVID-19 (2 of 3), sirm -> overall majority normal (0 of 1)
    assert b["accuracy"] == pytest.approx(4 / 8)
    # sensitivities: pneumonia 0/2, normal 2/3, COVID-19 2/3
    assert b["balanced_accuracy"] == pytest.approx((0 + 2 / 3 + 2 / 3) / 3)
    assert b["positive_sensitivity"] == pytest.approx(2 / 3) and b["positive_class"] == "COVID-19"


def test_ties_go_to_the_lower_class_index_and_one_source_gives_no_baseline():
    tie = _records([(2, "a"), (0, "a"), (1, "b")])
    assert source_only(tie, _records([(0, "a")]))["rule"]["a"] == "pneumonia"
    assert source_only(_records([(0, "a"), (1, "a")]), _records([(0, "a")])) is None
    assert source_only(_records([(0, "unknown"), (1, "unknown")]), _records([(0, "unknown")])) is None


def test_data_summary_prints_it(tmp_path, capsys):
    train = [(f"p{i}", f"t{i}.png", "normal" if i < 3 else "COVID-19", "rsna" if i < 3 else "cohen") for i in range(5)]
    test = [
        ("q0", "s0.png", "normal", "rsna"),
        ("q1", "s1.png", "pneumonia", "rsna"),
        ("q2", "s2.png", "COVID-19", "cohen"),
    ]
    root = write_covidx(tmp_path / "covidx", train, test)
    assert cli.main(["data-summary", "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "source-only baseline" in out and "rsna -> normal" in out and "accuracy 0.667" in out
    assert cli.main(["data-summary", "--data", str(root), "--json"]) == 0
    baseline = json.loads(capsys.readouterr().out)["source_only_baseline"]
    assert baseline["balanced_accuracy"] == pytest.approx((0 + 1 + 1) / 3)
    assert not math.isnan(baseline["positive_sensitivity"])
