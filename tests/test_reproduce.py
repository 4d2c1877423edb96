"""``fedlib reproduce`` without executing notebooks: the plan, the data set's identity and
folders, the decision to reuse, resume or refuse a run folder, and the CLI's options.
(tests/test_notebooks.py executes the notebooks.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_covidx

from fedlib import cli, config, notebook, reproduce
from fedlib.data.covidx import CLASSES, Layout
from fedlib.data.identity import fingerprint
from fedlib.errors import UserError
from fedlib.run import folder, io

V3 = {"train_split": "train_split_v3.txt", "test_split": "test_split_v3.txt"}


def covidx_v3(root: Path, n_train: int = 2) -> Path:
    """A tiny COVIDx folder whose split files carry the v3 names."""
    rows = [(f"p{c}{i}", f"{c}{i}.png", label) for c, label in enumerate(CLASSES) for i in range(n_train)]
    write_covidx(root, rows[:], [(f"q{c}", f"t{c}.png", label) for c, label in enumerate(CLASSES)])
    for split in ("train", "test"):
        (root / f"{split}_split.txt").rename(root / f"{split}_split_v3.txt")
    return root


def smoke_cfg(data: Path, **overrides) -> config.TrainConfig:
    return config.resolve("smoke", None, data=str(data), **{**V3, **overrides})


# ---------------------------------------------------------------- the plan


def test_plan_runs_every_model_and_mode_once_per_seed():
    steps = reproduce.plan(
        profile="smoke",
        data="synthetic",
        models=["resnet18", "mobilenet_v2"],
        modes=["fedavg", "central"],
        seeds=[0, 1],
        runs_dir="runs/x",
        figures_dir="figs",
        device="cpu",
        force=False,
        overrides={"class_weight": "balanced", **V3},
    )
    train = [s for s in steps if s.notebook == "01_train"]
    names = [
        folder.run_name(m, mode, seed)
        for seed in (0, 1)
        for m in ("resnet18", "mobilenet_v2")
        for mode in ("fedavg", "central")
    ]
    assert [s.report for s in train] == [f"01_train-{n}" for n in names]
    assert [s.run_dir for s in train] == [Path("runs/x") / n for n in names]
    assert [s.parameters["out"] for s in train] == [str(Path("runs/x") / n) for n in names]
    assert [s.parameters["seed"] for s in train] == [0] * 4 + [1] * 4
    # 00_data and every run get the same layout and training options
    assert all(s.parameters["overrides"] == {"class_weight": "balanced", **V3} for s in [steps[0], *train])
    assert steps[0].parameters["seed"] == 0
    analysis = {s.notebook: s.parameters for s in steps if s.notebook[:2] in ("02", "03", "04")}
    for name, params in analysis.items():
        assert params["seeds"] == [0, 1] and params["runs_dir"] == "runs/x" and params["figures_dir"] == "figs"
        assert set(params) == {"runs_dir", "figures_dir", "models", "seeds"} | (
            {"epsilon"} if name == "03_accuracy" else set()
        )


def test_the_run_config_is_what_the_notebook_resolves():
    step = reproduce.plan(
        profile="smoke",
        data="synthetic",
        models=["resnet18"],
        modes=["central"],
        seeds=[3],
        runs_dir="r",
        figures_dir="f",
        device="cpu",
        force=False,
        overrides={"pooled_budget": "matched", "val_fraction": 0.2, **V3},
    )[1]
    cfg = folder.run_config(step.parameters)
    assert (cfg.model, cfg.mode, cfg.seed, cfg.device) == ("resnet18", "central", 3, "cpu")
    assert (cfg.pooled_budget, cfg.val_fraction, cfg.train_split, cfg.test_split) == (
        "matched",
        0.2,
        "train_split_v3.txt",
        "test_split_v3.txt",
    )


def test_a_reproduction_is_planned_alike_from_its_spec_or_its_fields():
    fields = dict(profile="smoke", models=["resnet18"], modes=["fedavg"], seeds=[0], runs_dir="r", figures_dir="f")
    assert reproduce.plan(reproduce.Reproduction(**fields)) == reproduce.plan(**fields)
    with pytest.raises(TypeError, match="not both"):
        reproduce.plan(reproduce.Reproduction(**fields), profile="quick")


# ---------------------------------------------------------------- data identity and folders


def test_a_covidx_folder_is_named_by_folder_and_fingerprint(tmp_path):
    root = covidx_v3(tmp_path / "covidx v3")
    data = folder.data_set(smoke_cfg(root))
    assert data.fingerprint == fingerprint(root, Layout(**V3))
    assert data.tag == f"covidx_v3-{data.fingerprint[:8]}"
    assert folder.reproduce_paths("smoke", data, profile_synthetic=False) == (
        Path("runs/smoke") / data.tag,
        Path("figures") / f"smoke-{data.tag}",
        Path("reports") / f"smoke-{data.tag}",
    )


def test_the_wrong_split_file_name_fails_in_one_sentence(tmp_path):
    root = covidx_v3(tmp_path / "covidx")
    with pytest.raises(UserError, match="--train-split"):
        folder.data_set(config.resolve("smoke", None, data=str(root)))


def test_only_the_profiles_own_synthetic_set_draws_into_figures(tmp_path):
    assert folder.is_profile_synthetic(config.resolve("smoke", None, data_dir=str(tmp_path)))
    assert not folder.is_profile_synthetic(config.resolve("smoke", None, synth_seed=1))
    assert not folder.is_profile_synthetic(config.resolve("smoke", None, data=str(tmp_path)))
    data = folder.DataSet(tmp_path, "0123456789abcdef", "synthetic")
    assert folder.reproduce_paths("quick", data, profile_synthetic=True)[1:] == (Path("figures"), Path("reports/quick"))


def test_the_study_has_folders_of_its_own_per_profile_and_data_set():
    tag = "covidx-0123abcd"
    assert folder.study_paths("quick", "synthetic", tag) == (
        Path("runs/study/quick") / tag,
        Path("figures/study"),
        Path("reports/study/05_non_iid-quick.ipynb"),
    )
    assert folder.study_paths("smoke", "synthetic", tag) == (
        Path("runs/study/smoke") / tag,
        Path(f"figures/study/smoke-{tag}"),
        Path(f"reports/study/05_non_iid-smoke-{tag}.ipynb"),
    )
    assert folder.study_paths("quick", "/data/covidx", tag)[1:] == (
        Path(f"figures/study/quick-{tag}"),
        Path(f"reports/study/05_non_iid-quick-{tag}.ipynb"),
    )


def test_the_wanted_config_is_what_a_run_records(tmp_path):
    root = covidx_v3(tmp_path / "covidx")
    cfg = smoke_cfg(root, class_weight="balanced")
    wanted = folder.wanted_config(cfg, folder.data_set(cfg))
    assert wanted["data"] == str(root.resolve()) and wanted["data_dir"] == str(Path("data").resolve())
    assert wanted["data_fingerprint"] == fingerprint(root, Layout(**V3))
    assert wanted["train_split"] == "train_split_v3.txt" and wanted["class_weight"] == "balanced"


# ---------------------------------------------------------------- reuse, resume, refuse


@pytest.fixture
def wanted(tmp_path) -> dict:
    cfg = smoke_cfg(covidx_v3(tmp_path / "covidx"))
    return folder.wanted_config(cfg, folder.data_set(cfg))


def fake_run(run_dir: Path, cfg: dict, finished: bool = True) -> Path:
    io.write_json(run_dir / "config.json", cfg)
    if finished:
        io.write_json(run_dir / "final.json", {"model": cfg["model"]})
    return run_dir


def test_a_run_with_this_config_is_reused_or_resumed(tmp_path, wanted):
    assert reproduce.decide(tmp_path / "none", wanted) == "train"
    assert reproduce.decide(fake_run(tmp_path / "done", wanted), wanted) == "reuse"
    assert reproduce.decide(fake_run(tmp_path / "half", wanted, finished=False), wanted) == "resume"
    # the hardware and the data's location may change; the fingerprint says it is the same data
    moved = {**wanted, "device": "cuda", "amp": True, "data": "/elsewhere/covidx", "data_dir": "/elsewhere"}
    assert reproduce.decide(fake_run(tmp_path / "moved", moved), wanted) == "reuse"
    assert reproduce.decide(tmp_path / "done", wanted, force=True) == "retrain"


@pytest.mark.parametrize("finished", [True, False], ids=["finished", "unfinished"])
def test_a_run_with_another_config_is_refused_in_one_sentence(tmp_path, wanted, finished):
    run = fake_run(tmp_path / "resnet18-fedavg-seed0", {**wanted, "rounds": 5, "data_fingerprint": "f" * 16}, finished)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(UserError) as err:
        reproduce.decide(run, wanted)
    message = str(err.value)
    assert message.startswith(f"{run} was trained with another config")
    assert "data_fingerprint" in message and "rounds: 5 in the run, 2 now" in message
    assert "--force" in message and "--runs-dir" in message and message.count(". ") == 0
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_changed_knob_stops_the_reproduction_before_any_notebook(tmp_path, monkeypatch):
    """A finished run in the runs folder, then the same reproduction with another --class-weight."""
    monkeypatch.chdir(tmp_path)
    root = covidx_v3(tmp_path / "covidx")
    args = dict(profile="smoke", data=str(root), models=["resnet18"], modes=["fedavg"], progress=False)
    cfg = smoke_cfg(root, model="resnet18", mode="fedavg")
    data = folder.data_set(cfg)
    run = fake_run(tmp_path / "runs" / "smoke" / data.tag / "resnet18-fedavg-seed0", folder.wanted_config(cfg, data))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    executed = []
    monkeypatch.setattr(notebook, "execute", lambda *a, **k: executed.append(a))
    with pytest.raises(UserError, match=r"resnet18-fedavg-seed0 was trained with another config .*class_weight"):
        reproduce.reproduce(**args, overrides={**V3, "class_weight": "balanced"})
    assert executed == [] and not (tmp_path / "reports").exists() and not (tmp_path / "figures").exists()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # the same knobs reuse it; 00_data and the analysis notebooks still run
    result = reproduce.reproduce(**args, overrides=V3)
    assert result["skipped"] == [Path("runs/smoke") / data.tag / "resnet18-fedavg-seed0"]
    assert [a[0].stem for a in executed] == ["00_data", "02_loss_curves", "03_accuracy", "04_gradcam"]
    assert result["figures_dir"] == Path("figures") / f"smoke-{data.tag}"


def test_overrides_may_not_set_what_the_reproduction_sets(tmp_path):
    with pytest.raises(UserError, match="seed"):
        reproduce.reproduce(profile="smoke", overrides={"seed": 1, "data_dir": str(tmp_path)})
    with pytest.raises(UserError, match="not both"):
        reproduce.reproduce(profile="smoke", seeds=[0], seed=1)


# ---------------------------------------------------------------- the command line


@pytest.fixture
def called(monkeypatch) -> dict:
    seen = {}
    monkeypatch.setattr(reproduce, "reproduce", lambda **kw: seen.update(kw))
    return seen


def test_cli_passes_layout_seeds_and_training_options(called):
    assert (
        cli.main(
            [
                "reproduce",
                "--profile",
                "smoke",
                "--data",
                "/d",
                "--seeds",
                "0",
                "1",
                "2",
                "--train-split",
                "train_split_v3.txt",
                "--test-split",
                "test_split_v3.txt",
                "--train-dir",
                "tr",
                "--test-dir",
                "te",
                "--val-fraction",
                "0.1",
                "--class-weight",
                "balanced",
                "--pooled-budget",
                "matched",
            ]
        )
        == 0
    )
    assert called["seeds"] == [0, 1, 2]
    assert called["overrides"] == {
        "train_split": "train_split_v3.txt",
        "test_split": "test_split_v3.txt",
        "train_dir": "tr",
        "test_dir": "te",
        "val_fraction": 0.1,
        "class_weight": "balanced",
        "pooled_budget": "matched",
    }
    assert (called["runs_dir"], called["figures_dir"], called["reports_dir"]) == (None, None, None)


def test_cli_seed_is_one_seed_and_defaults_stay_the_profiles(called):
    cli.main(["reproduce", "--seed", "4"])
    assert called["seeds"] == [4] and called["overrides"] == {}
    cli.main(["reproduce"])
    assert called["seeds"] is None and called["jobs"] is None  # the profile's
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--seed", "1", "--seeds", "2"])


def test_the_profile_gives_the_seeds_and_jobs_unless_given(monkeypatch):
    monkeypatch.setattr(reproduce.os, "cpu_count", lambda: 8)
    quick = reproduce.Reproduction(profile="quick").checked()
    assert quick.seeds == [0, 1, 2] and quick.jobs == 2 and quick.threads == 4  # 8 cores / 2 jobs
    smoke = reproduce.Reproduction(profile="smoke").checked()
    assert smoke.seeds == [0] and smoke.jobs == 1 and smoke.threads is None
    given = reproduce.Reproduction(profile="quick", seed=5, jobs=3, threads=1).checked()
    assert given.seeds == [5] and (given.jobs, given.threads) == (3, 1)
    with pytest.raises(UserError, match="--jobs must be an integer of at least 1"):
        reproduce.Reproduction(profile="smoke", jobs=0).checked()


def test_the_mismatch_sentence_reaches_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = covidx_v3(tmp_path / "covidx")
    cfg = smoke_cfg(root, model="resnet18", mode="central")
    data = folder.data_set(cfg)
    run = tmp_path / "runs" / "smoke" / data.tag / "resnet18-central-seed0"
    fake_run(run, {**folder.wanted_config(cfg, data), "pooled_budget": "matched"})
    code = cli.main(
        [
            "reproduce",
            "--profile",
            "smoke",
            "--data",
            str(root),
            "--models",
            "resnet18",
            "--modes",
            "central",
            "--train-split",
            "train_split_v3.txt",
            "--test-split",
            "test_split_v3.txt",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"fedlib: error: {Path('runs/smoke') / data.tag / 'resnet18-central-seed0'} was trained")
    assert 'pooled_budget: "matched" in the run, "paper" now' in err
    assert json.loads((run / "config.json").read_text())["pooled_budget"] == "matched"


# ---------------------------------------------------------------- every option checked before work (issue 26)


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"seeds": [-1]}, "--seeds must be one or more distinct non-negative integers, got [-1]"),
        ({"runs_dir": "a-file"}, "a-file is a file, not a folder; choose another --runs-dir"),
        ({"figures_dir": "a-file/figures"}, "a-file is a file, not a folder; choose another --figures-dir"),
        ({"reports_dir": "a-file"}, "a-file is a file, not a folder; choose another --reports-dir"),
    ],
)
def test_a_bad_option_is_refused_before_any_work(tmp_path, monkeypatch, fields, words):
    """They were found only inside a notebook, after 30 s of work."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError) as caught:
        reproduce.Reproduction(profile="smoke", **fields).checked()
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--report", "out.txt"], "--report out.txt must name a notebook file (.ipynb)"),
        (["--report", "a-file/r.ipynb"], "a-file is a file, not a folder; choose another --report"),
        (["--runs-dir", "a-file"], "a-file is a file, not a folder; choose another --runs-dir"),
        (["--seeds", "-1"], "--seeds must be one or more distinct non-negative integers, got [-1]"),
    ],
)
def test_study_checks_its_options_before_any_work(tmp_path, monkeypatch, capsys, argv, words):
    """A bad --report started the whole study."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")

    def started(*args, **kwargs):
        raise AssertionError("the study started")

    monkeypatch.setattr(folder, "data_set", started)
    monkeypatch.setattr(reproduce, "execute", started)
    assert cli.main(["study", "--profile", "smoke", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err, err
