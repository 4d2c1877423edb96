"""The notebooks, executed through papermill by ``fedlib.reproduce`` at the smoke
profile into a temporary folder: what they write, what the runner passes them,
skipping and retraining finished runs, and failures that name the notebook.

One reproduction (two small models, FedAvg and pooled) is shared by the module;
the whole file takes about two minutes on a 2-core CPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
from PIL import Image

from fedlib import config, reproduce
from fedlib.errors import UserError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MODELS = ["resnet18", "mobilenet_v2"]
MODES = ["fedavg", "central"]
FIGURES = {
    "00_data": ["fig1_class_distribution", "fig_client_distribution", "fig_samples"],
    "02_loss_curves": ["fig3_fl_loss", "fig5_fl_vs_pooled_loss"],
    "03_accuracy": ["fig4_per_label_accuracy", "fig_confusion"],
}
TABLES = {
    "00_data": ["table_class_distribution", "table_client_distribution"],
    "03_accuracy": ["table2_fl_accuracy", "table3_per_label", "table4_pooled_accuracy", "table_gap"],
}


def smoke_args(root: Path, **changes) -> dict:
    args = dict(profile="smoke", models=MODELS, modes=MODES, runs_dir=str(root / "runs"),
                figures_dir=str(root / "figures"), reports_dir=str(root / "reports"), progress=False,
                overrides={"data_dir": str(root / "data")})
    return {**args, **changes}


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduction")
    result = reproduce.reproduce(**smoke_args(root))
    return root, result


@pytest.mark.parametrize("notebook", sorted(FIGURES))
def test_notebook_writes_its_figures(reproduction, notebook):
    root, _ = reproduction
    for name in FIGURES[notebook]:
        for ext in ("png", "pdf"):
            path = root / "figures" / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
        with Image.open(root / "figures" / f"{name}.png") as img:
            img.verify()


@pytest.mark.parametrize("notebook", sorted(TABLES))
def test_notebook_writes_its_tables(reproduction, notebook):
    root, _ = reproduction
    for name in TABLES[notebook]:
        md = root / "figures" / f"{name}.md"
        assert md.is_file() and md.stat().st_size > 0
        assert "synthetic" in md.read_text().lower()  # the caption says which data
        assert len(pd.read_csv(root / "figures" / f"{name}.csv")) > 0


def test_accuracy_tables_have_a_row_per_trained_model(reproduction):
    root, _ = reproduction
    for name in ("table2_fl_accuracy", "table3_per_label", "table4_pooled_accuracy", "table_gap"):
        assert list(pd.read_csv(root / "figures" / f"{name}.csv")["model"]) == ["ResNet-18", "MobileNet-v2"]


def test_every_notebook_is_kept_executed(reproduction):
    root, result = reproduction
    reports = root / "reports" / "smoke"
    expected = ["00_data", *(f"01_train-{m}-{mode}" for m in MODELS for mode in MODES), "02_loss_curves",
                "03_accuracy"] + (["04_gradcam"] if (NOTEBOOKS / "04_gradcam.ipynb").is_file() else [])
    assert [p.name for p in result["executed"]] == [f"{name}.ipynb" for name in expected]
    assert sorted(p.name for p in reports.iterdir()) == sorted(f"{name}.ipynb" for name in expected)
    for model in MODELS:
        for mode in MODES:
            assert (root / "runs" / f"{model}-{mode}" / "final.json").is_file()


def test_runner_parameters_match_the_notebooks(tmp_path):
    steps = reproduce.plan(profile="smoke", data="synthetic", models=MODELS, modes=MODES, runs_dir="runs/smoke",
                           figures_dir="figures", seed=0, device="cpu", force=False, overrides={})
    assert {s.notebook for s in steps} >= {"00_data", "01_train", "02_loss_curves", "03_accuracy"}
    for step in steps:
        declared = set(pm.inspect_notebook(str(NOTEBOOKS / f"{step.notebook}.ipynb")))
        assert set(step.parameters) <= declared, step.notebook
        if step.notebook != "04_gradcam":  # written elsewhere; passing a subset is enough there
            assert set(step.parameters) == declared, step.notebook


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_source_notebooks_have_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def test_finished_runs_are_skipped_and_force_retrains(reproduction, tmp_path):
    root, _ = reproduction
    final = root / "runs" / "mobilenet_v2-fedavg" / "final.json"
    before = final.stat().st_mtime_ns
    # Own figures and reports folders: the shared ones stay as the first reproduction left them.
    args = smoke_args(root, models=["mobilenet_v2"], modes=["fedavg"], figures_dir=str(tmp_path / "figures"),
                      reports_dir=str(tmp_path / "reports"))
    result = reproduce.reproduce(**args)
    assert result["skipped"] == [final.parent]
    assert final.stat().st_mtime_ns == before
    assert not (tmp_path / "reports" / "smoke" / "01_train-mobilenet_v2-fedavg.ipynb").exists()

    result = reproduce.reproduce(**args, force=True)
    assert result["skipped"] == []
    assert final.stat().st_mtime_ns != before
    assert (tmp_path / "reports" / "smoke" / "01_train-mobilenet_v2-fedavg.ipynb").is_file()


def test_an_interrupted_run_is_resumed(reproduction, tmp_path):
    root, _ = reproduction
    run = tmp_path / "mobilenet_v2-fedavg"
    shutil.copytree(root / "runs" / "mobilenet_v2-fedavg", run)
    (run / "final.json").unlink()  # as if killed after the last checkpoint
    cfg = config.resolve("smoke", None, model="mobilenet_v2", data_dir=str(root / "data"))
    final = reproduce.ensure_run(cfg, run, progress=False)
    assert (run / "final.json").is_file()
    assert final["model"] == "mobilenet_v2" and len(pd.read_csv(run / "history.csv")) == cfg.rounds


def test_a_failing_notebook_names_itself_and_keeps_the_evidence(reproduction, tmp_path):
    root, _ = reproduction
    figures = sorted((root / "figures").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in figures}
    args = smoke_args(root, data=str(tmp_path / "no-such-covidx"), models=["mobilenet_v2"], modes=["fedavg"],
                      reports_dir=str(tmp_path / "reports"))
    with pytest.raises(UserError) as err:
        reproduce.reproduce(**args)
    message = str(err.value)
    assert "00_data.ipynb" in message and "cell" in message and "does not exist" in message
    reports = tmp_path / "reports" / "smoke"
    assert sorted(p.name for p in reports.iterdir()) == ["00_data.failed.ipynb"]
    assert {p: p.stat().st_mtime_ns for p in sorted((root / "figures").iterdir())} == stamps


def test_a_bogus_model_fails_before_any_notebook_runs(tmp_path):
    with pytest.raises(UserError, match="bogus"):
        reproduce.reproduce(**smoke_args(tmp_path, models=["bogus"]))
    assert not (tmp_path / "reports").exists()
