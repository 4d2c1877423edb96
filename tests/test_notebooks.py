"""The notebooks, executed through papermill by ``fedlib.reproduce`` at the smoke
profile into a temporary folder: what they write, what the runner passes them,
skipping and retraining finished runs, a second data set beside the first, and
failures that name the notebook.

One reproduction (two small models, FedAvg and pooled) is shared by the module;
the whole file takes a few minutes on a 2-core CPU. tests/test_reproduce.py
covers the plan and the reuse decision without executing notebooks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
from conftest import write_covidx
from PIL import Image

from fedlib import config, reproduce
from fedlib.data.covidx import CLASSES, Layout
from fedlib.data.identity import fingerprint
from fedlib.errors import UserError
from fedlib.run import io, results

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
    """The reproduction's defaults pick runs/, figures/ and reports/ below the current folder:
    the tests run it from ``root`` (a temporary folder)."""
    args = dict(profile="smoke", models=MODELS, modes=MODES, progress=False, overrides={"data_dir": str(root / "data")})
    return {**args, **changes}


def covidx_v3(root: Path) -> Path:
    """A tiny COVIDx folder whose split files carry COVIDx v3's names."""
    train = [(f"p{c}{i}", f"{c}{i}.png", label) for c, label in enumerate(CLASSES) for i in range(4)]
    test = [(f"q{c}{i}", f"t{c}{i}.png", label) for c, label in enumerate(CLASSES) for i in range(2)]
    write_covidx(root, train, test)
    for split in ("train", "test"):
        (root / f"{split}_split.txt").rename(root / f"{split}_split_v3.txt")
    return root


V3 = {"train_split": "train_split_v3.txt", "test_split": "test_split_v3.txt"}


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduction")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = reproduce.reproduce(**smoke_args(root))
    return root, result


def stamps(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_default_synthetic_reproduction_uses_the_default_folders(reproduction):
    root, result = reproduction
    tag = result["data_set"].tag
    assert tag.startswith("synthetic-")
    assert result["runs_dir"] == Path("runs/smoke") / tag
    assert (result["figures_dir"], result["reports_dir"]) == (Path("figures"), Path("reports/smoke"))


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
    names = [results.run_name(m, mode, 0) for m in MODELS for mode in MODES]
    expected = ["00_data", *(f"01_train-{n}" for n in names), "02_loss_curves", "03_accuracy"] + (
        ["04_gradcam"] if (NOTEBOOKS / "04_gradcam.ipynb").is_file() else []
    )
    assert [p.name for p in result["executed"]] == [f"{name}.ipynb" for name in expected]
    assert sorted(p.name for p in reports.iterdir()) == sorted(f"{name}.ipynb" for name in expected)
    for name in names:
        run = root / result["runs_dir"] / name
        assert (run / "final.json").is_file()
        assert io.read_json(run / "config.json")["data_fingerprint"] == result["data_set"].fingerprint


def test_00_data_names_the_data_set(reproduction):
    root, result = reproduction
    nb = nbformat.read(root / "reports" / "smoke" / "00_data.ipynb", as_version=4)
    shown = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert f"data set {result['data_set'].tag}" in shown and result["data_set"].fingerprint in shown


# The analysis notebooks' parameters (issue "Results you can trust"): what the runner passes them.
ANALYSIS = {
    "02_loss_curves": {"runs_dir", "figures_dir", "models", "seeds"},
    "03_accuracy": {"runs_dir", "figures_dir", "models", "seeds", "epsilon"},
    "04_gradcam": {"runs_dir", "figures_dir", "models", "seeds"},
}


def test_runner_parameters_match_the_notebooks(tmp_path):
    steps = reproduce.plan(
        profile="smoke",
        data="synthetic",
        models=MODELS,
        modes=MODES,
        seeds=[0, 1],
        runs_dir="runs/smoke",
        figures_dir="figures",
        device="cpu",
        force=False,
        overrides={},
    )
    assert {s.notebook for s in steps} >= {"00_data", "01_train", "02_loss_curves", "03_accuracy"}
    for step in steps:
        declared = set(pm.inspect_notebook(str(NOTEBOOKS / f"{step.notebook}.ipynb")))
        if step.notebook in ANALYSIS:
            assert set(step.parameters) == ANALYSIS[step.notebook], step.notebook
            if "seeds" in declared:  # the notebook takes the runner's parameters (papermill adds unknown ones)
                assert set(step.parameters) <= declared, step.notebook
        else:
            assert set(step.parameters) == declared, step.notebook


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_source_notebooks_have_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def training_only_notebooks(folder: Path) -> Path:
    """A notebooks folder with the real 01_train and one-cell 00_data, 02_loss_curves and
    03_accuracy that draw nothing (no 04_gradcam: the plan leaves it out): for a test of what
    ``reproduce`` trains, skips or retrains, whose figures the module's reproduction checks.
    Each drawing notebook costs a kernel that imports PyTorch and matplotlib."""
    folder.mkdir()
    shutil.copy(NOTEBOOKS / "01_train.ipynb", folder)
    for name in ("00_data", "02_loss_curves", "03_accuracy"):
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)  # its kernel and language
        nb.cells = [nbformat.v4.new_code_cell("pass", metadata={"tags": ["parameters"]})]
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


def test_finished_runs_are_skipped_and_force_retrains(reproduction, tmp_path, monkeypatch):
    root, first = reproduction
    monkeypatch.chdir(root)
    run = first["runs_dir"] / results.run_name("mobilenet_v2", "fedavg", 0)
    final = run / "final.json"
    before = final.stat().st_mtime_ns
    # Own figures and reports folders: the shared ones stay as the first reproduction left them.
    args = smoke_args(
        root,
        models=["mobilenet_v2"],
        modes=["fedavg"],
        figures_dir=str(tmp_path / "figures"),
        reports_dir=str(tmp_path / "reports"),
        notebooks_dir=training_only_notebooks(tmp_path / "notebooks"),
    )
    result = reproduce.reproduce(**args)
    assert result["skipped"] == [run]
    assert final.stat().st_mtime_ns == before
    assert not (tmp_path / "reports" / "01_train-mobilenet_v2-fedavg-seed0.ipynb").exists()
    assert [p.name for p in result["executed"]] == ["00_data.ipynb", "02_loss_curves.ipynb", "03_accuracy.ipynb"]

    result = reproduce.reproduce(**args, force=True)
    assert result["skipped"] == []
    assert final.stat().st_mtime_ns != before
    assert (tmp_path / "reports" / "01_train-mobilenet_v2-fedavg-seed0.ipynb").is_file()


def test_a_changed_knob_stops_and_leaves_the_run_alone(reproduction, tmp_path, monkeypatch):
    root, first = reproduction
    monkeypatch.chdir(root)
    run = root / first["runs_dir"] / results.run_name("resnet18", "central", 0)
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    args = smoke_args(root, models=["resnet18"], modes=["central"], reports_dir=str(tmp_path / "reports"))
    args["overrides"] = {**args["overrides"], "pooled_budget": "matched"}
    with pytest.raises(UserError) as err:
        reproduce.reproduce(**args)
    assert str(err.value).startswith(f"{first['runs_dir'] / 'resnet18-central-seed0'} was trained with another config")
    assert "pooled_budget" in str(err.value) and "--force" in str(err.value)
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    assert not (tmp_path / "reports").exists()


def test_another_data_set_trains_into_its_own_folders(reproduction, tmp_path, monkeypatch):
    """COVIDx-format data with v3 split names after the synthetic reproduction: its own runs,
    figures and reports; the synthetic ones stay as they were."""
    root, first = reproduction
    monkeypatch.chdir(root)
    data = covidx_v3(tmp_path / "covidx")
    figures_before, runs_before = stamps(root / "figures"), stamps(root / first["runs_dir"])
    args = smoke_args(root, data=str(data), models=["resnet18"], modes=["fedavg"])
    args["overrides"] = {**args["overrides"], **V3}
    result = reproduce.reproduce(**args)

    fp = fingerprint(data, Layout(**V3))
    tag = f"covidx-{fp[:8]}"
    assert (result["data_set"].tag, result["runs_dir"]) == (tag, Path("runs/smoke") / tag)
    assert (result["figures_dir"], result["reports_dir"]) == (
        Path("figures") / f"smoke-{tag}",
        Path("reports") / f"smoke-{tag}",
    )
    found = results.find_runs(root / result["runs_dir"])
    assert [r.path.name for r in found] == ["resnet18-fedavg-seed0"]
    assert all(r.config["data_fingerprint"] == fp and r.config["train_split"] == "train_split_v3.txt" for r in found)
    assert (root / "figures" / f"smoke-{tag}" / "fig1_class_distribution.png").is_file()
    assert stamps(root / "figures") == figures_before | stamps(root / "figures" / f"smoke-{tag}")
    assert stamps(root / first["runs_dir"]) == runs_before
    accuracy = nbformat.read(root / result["reports_dir"] / "03_accuracy.ipynb", as_version=4)
    assert f'runs_dir = "{result["runs_dir"]}"' in "".join(c.source for c in accuracy.cells)


def test_an_interrupted_run_is_resumed(reproduction, tmp_path):
    root, first = reproduction
    run = tmp_path / "mobilenet_v2-fedavg-seed0"
    shutil.copytree(root / first["runs_dir"] / "mobilenet_v2-fedavg-seed0", run)
    (run / "final.json").unlink()  # as if killed after the last checkpoint
    cfg = config.resolve("smoke", None, model="mobilenet_v2", data_dir=str(root / "data"))
    final = reproduce.ensure_run(cfg, run, progress=False)
    assert (run / "final.json").is_file()
    assert final["model"] == "mobilenet_v2" and len(pd.read_csv(run / "history.csv")) == cfg.rounds


def test_a_failing_notebook_names_itself_and_keeps_the_evidence(reproduction, tmp_path, monkeypatch):
    root, _ = reproduction
    monkeypatch.chdir(root)
    figures = stamps(root / "figures")
    data = covidx_v3(tmp_path / "covidx")
    (data / "train" / "00.png").write_bytes(b"")  # listed, present, empty: reading it fails in 00_data
    args = smoke_args(
        root, data=str(data), models=["mobilenet_v2"], modes=["fedavg"], reports_dir=str(tmp_path / "reports")
    )
    args["overrides"] = {**args["overrides"], **V3}
    with pytest.raises(UserError) as err:
        reproduce.reproduce(**args)
    message = str(err.value)
    assert "00_data.ipynb" in message and "cell" in message and "empty" in message
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["00_data.failed.ipynb"]
    assert stamps(root / "figures") == figures


def test_a_missing_data_folder_fails_before_any_notebook(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        reproduce.reproduce(
            **smoke_args(tmp_path, data=str(tmp_path / "no-such-covidx"), reports_dir=str(tmp_path / "reports"))
        )
    assert not (tmp_path / "reports").exists()


def test_a_bogus_model_fails_before_any_notebook_runs(tmp_path):
    with pytest.raises(UserError, match="bogus"):
        reproduce.reproduce(**smoke_args(tmp_path, models=["bogus"], reports_dir=str(tmp_path / "reports")))
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("notebook", ["02_loss_curves", "03_accuracy", "04_gradcam"])
def test_an_analysis_notebook_that_finds_no_runs_fails_naming_runs_dir_and_writes_nothing(notebook, tmp_path):
    """Issue 26: a mistyped runs_dir replaced every earlier figure and table with empty ones (exit 0)."""
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "table2_fl_accuracy.md").write_text("an earlier table\n")
    typo = tmp_path / "runs" / "quikc"

    with pytest.raises(pm.PapermillExecutionError) as caught:
        pm.execute_notebook(
            str(NOTEBOOKS / f"{notebook}.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"runs_dir": str(typo), "figures_dir": str(figures), "models": MODELS},
            kernel_name=reproduce.KERNEL,
            progress_bar=False,
        )

    assert caught.value.ename == "UserError" and f"runs_dir {typo} does not exist" in caught.value.evalue
    assert [p.name for p in figures.iterdir()] == ["table2_fl_accuracy.md"]
    assert (figures / "table2_fl_accuracy.md").read_text() == "an earlier table\n"


@pytest.mark.parametrize(
    "notebook, parameter, value, words",
    [
        ("03_accuracy", "epsilon", -1, "notebook parameter epsilon must be a finite non-negative number, got -1"),
        ("02_loss_curves", "seeds", "0", "notebook parameter seeds must be None or a list of non-negative integers"),
        ("04_gradcam", "models", ["vgg16"], "notebook parameter models must be a list of model names"),
    ],
)
def test_a_notebook_parameter_of_the_wrong_type_is_named(notebook, parameter, value, words, tmp_path):
    """It was a cell traceback that did not name the parameter (and epsilon -1 was accepted)."""
    with pytest.raises(pm.PapermillExecutionError) as caught:
        pm.execute_notebook(
            str(NOTEBOOKS / f"{notebook}.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"runs_dir": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "f"), parameter: value},
            kernel_name=reproduce.KERNEL,
            progress_bar=False,
        )
    assert caught.value.ename == "UserError" and words in caught.value.evalue, caught.value.evalue
    assert not (tmp_path / "f").exists()


def test_sigterm_while_a_notebook_runs_is_one_line(tmp_path):
    """SIGTERM during `fedlib study` printed about 170 lines (asyncio's report of the cell it cut short)."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    started = tmp_path / "started"
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(300)")
        ]
    )
    nbformat.write(notebook, tmp_path / "slow.ipynb")
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from fedlib import cli, reproduce

        def slow(args):  # a command that runs a notebook, as study and reproduce do
            reproduce.execute(Path({str(tmp_path / "slow.ipynb")!r}), Path({str(tmp_path / "out.ipynb")!r}), {{}}, progress=False)

        cli.cmd_params = slow
        sys.exit(cli.main(["params"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the notebook's cell never started"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip() == "fedlib: interrupted", err
