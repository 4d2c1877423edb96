"""The non-IID study (fedlib.study, fedlib.report.non_iid, notebook 05_non_iid): its grid, the
per-hospital accuracy it reports, and the notebook executed headless on a smoke-sized grid."""

from __future__ import annotations

import pandas as pd
import pytest

from fedlib import reproduce, study
from fedlib.report import non_iid


def test_the_grid_trains_pooled_once_per_seed_and_every_other_cell():
    grid = study.Study(seeds=(0, 1))
    names = [c[0] for c in study.cells(grid)]
    assert names.count("pooled-seed0") == 1 and names.count("pooled-seed1") == 1
    assert len(names) == 2 * (1 + len(study.PARTITIONS) * (len(study.METHODS) - 1))
    assert "dirichlet0.1-fedbn-seed1" in names and "by_source-local-seed0" in names
    cfg = study.run_config(grid, "dirichlet", 0.3, "fedadam", 0)
    assert (cfg.mode, cfg.strategy, cfg.partition, cfg.alpha) == ("fedavg", "fedadam", "dirichlet", 0.3)
    assert cfg.server_lr == grid.method_settings["fedadam"]["server_lr"]
    pooled = study.run_config(grid, "by_source", None, "pooled", 0)
    assert (pooled.mode, pooled.strategy) == ("central", "fedavg")


CLASSES = ["pneumonia", "normal", "COVID-19"]


def test_hospital_accuracy_is_on_its_own_patients():
    # Two hospitals; the model is right on pneumonia and normal, wrong on every COVID-19 image.
    confusion = [[10, 0, 0], [0, 10, 0], [0, 10, 0]]
    final = {
        "classes": CLASSES,
        "clients": 2,
        "client_class_counts": [[5, 5, 0], [0, 5, 5]],
        "client_sources": [["a"], ["b"]],
        "test": {"confusion": confusion},
        "test_by_source": {"a": [[4, 0, 0], [0, 4, 0], [0, 0, 0]], "b": [[0, 0, 0], [0, 3, 1], [0, 2, 2]]},
    }
    # Label skew: the test set reweighted to each hospital's class mix.
    assert non_iid.hospital_accuracies(final, "dirichlet") == pytest.approx([1.0, 0.5])
    # By source: the test images of the hospital's own source.
    assert non_iid.hospital_accuracies(final, "by_source") == pytest.approx([1.0, 5 / 8])
    # Local-only / FedBN: each hospital with its own model.
    per_client = [{"test": {"confusion": [[0, 10, 0], [0, 10, 0], [0, 10, 0]]}}, {"test": {"confusion": confusion}}]
    assert non_iid.hospital_accuracies({**final, "per_client": per_client}, "iid") == pytest.approx([0.5, 0.5])


def test_the_notebook_runs_the_grid_and_writes_its_figures_and_tables(data_dir, tmp_path):
    parameters = {
        "profile": "smoke",
        "runs_dir": str(tmp_path / "runs"),
        "figures_dir": str(tmp_path / "figures"),
        "partitions": [["iid", None], ["by_source", None]],
        "jobs": 1,
        "overrides": {"rounds": 1, "clients": 3, "data_dir": str(data_dir)},
    }
    report = tmp_path / "05_non_iid.ipynb"
    reproduce.execute(reproduce.NOTEBOOKS_DIR / "05_non_iid.ipynb", report, parameters, progress=False)
    assert report.is_file()
    for name in ("non_iid_methods", "non_iid_alpha", "non_iid_hospitals"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000  # a drawn figure, not an empty file
    table = pd.read_csv(tmp_path / "figures" / "non_iid_runs.csv")
    assert len(table) == 2 * len(study.METHODS)  # pooled shown under both partitions
    assert set(table["method"]) == set(study.METHODS)
    main = (tmp_path / "figures" / "table_non_iid.md").read_text()
    assert "SYNTHETIC" in main and "| by_source |" in main and "FedBN" in main


def test_fedlib_study_on_a_missing_data_folder_is_one_line(tmp_path, capsys, monkeypatch):
    from fedlib.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["study", "--data", str(tmp_path / "nowhere"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedlib: error: ") and "nowhere" in err and "\n" not in err
    assert not (tmp_path / "figures").exists() and not (tmp_path / "reports").exists()
