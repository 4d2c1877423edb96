"""fedlib.run.results on hand-made run folders: finding runs by (model, mode, seed), refusing
mixed data sets and duplicate runs, and the per-run numbers the tables read."""

from __future__ import annotations

import math

import pytest
import torch
from fabricate import MAJORITY, diagonal, history, write_run

from fedlib.errors import UserError
from fedlib.run import results
from fedlib.run.io import write_json


def test_find_runs_filters_by_model_mode_and_seed_and_skips_unfinished(tmp_path):
    for seed in (0, 1, 2):
        write_run(tmp_path, "resnet18", "fedavg", seed, test=diagonal((4, 4, 4)))
    write_run(tmp_path, "resnet18", "central", 0, test=diagonal((4, 4, 4)))
    (write_run(tmp_path, "mobilenet_v2", "fedavg", 0, test=diagonal((4, 4, 4))) / "final.json").unlink()
    runs = results.find_runs(tmp_path, models=["resnet18", "mobilenet_v2"], modes=["fedavg"], seeds=[0, 2])
    assert [(r.model, r.mode, r.seed) for r in runs] == [("resnet18", "fedavg", 0), ("resnet18", "fedavg", 2)]
    assert [r.path.name for r in runs] == ["resnet18-fedavg-seed0", "resnet18-fedavg-seed2"]
    assert len(results.find_runs(tmp_path)) == 4


def test_check_one_dataset_refuses_two_fingerprints(tmp_path):
    write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)), fingerprint="aaaa")
    write_run(tmp_path, "resnet18", "central", 0, test=diagonal((4, 4, 4)), fingerprint="bbbb")
    runs = results.find_runs(tmp_path)
    with pytest.raises(
        UserError,
        match=r"differ in data_fingerprint \('aaaa' vs 'bbbb'\)|"
        r"differ in data_fingerprint \('bbbb' vs 'aaaa'\)",
    ):
        results.check_one_dataset(runs)
    results.check_one_dataset([runs[0]])  # one run is one data set


@pytest.mark.parametrize(
    "key, a, b", [("image_size", 32, 64), ("profile", "smoke", "quick"), ("test_subset", None, 100)]
)
def test_check_one_dataset_refuses_other_sizes_profiles_and_test_sets(tmp_path, key, a, b):
    write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)), **{key: a})
    write_run(tmp_path, "resnet18", "fedavg", 1, test=diagonal((4, 4, 4)), **{key: b})
    with pytest.raises(UserError, match=f"differ in {key}"):
        results.check_one_dataset(results.find_runs(tmp_path))


def test_check_unique_refuses_an_old_folder_beside_its_seeded_successor(tmp_path):
    new = write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)))
    old = tmp_path / "resnet18-fedavg"  # the naming before seeds
    old.mkdir()
    for name in ("config.json", "final.json", "history.csv"):
        (old / name).write_bytes((new / name).read_bytes())
    runs = results.find_runs(tmp_path)
    assert len(runs) == 2
    with pytest.raises(UserError, match="both resnet18-fedavg-seed0"):
        results.check_unique(runs)


def test_last_evals_accuracy_skips_rows_without_an_evaluation(tmp_path):
    rows = history([1.0, 0.9, 0.8, 0.7, 0.6], 32, [0.2, 0.9, 0.6, 0.3, 0.84])
    del rows[3]["test_accuracy"]  # round 4 was not evaluated (eval_every > 1)
    run = results.load_run(write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)), rows=rows))
    # the last three evaluated rounds are 2, 3 and 5
    assert results.last_evals_accuracy(run.history) == pytest.approx((0.9 + 0.6 + 0.84) / 3)
    assert results.last_evals_accuracy(run.history, k=1) == pytest.approx(0.84)


def test_run_metrics_reads_test_not_train_and_flags_chance(tmp_path):
    run = results.load_run(
        write_run(
            tmp_path,
            "resnet18",
            "fedavg",
            0,
            test=MAJORITY,
            train=diagonal((8, 2, 6)),
            rows=history([1.0, 0.5], 32, [0.5, 0.75]),
        )
    )
    m = results.run_metrics(run)
    assert m["test_accuracy"] == pytest.approx(20 / 24)
    assert m["test_balanced_accuracy"] == pytest.approx(1 / 3)
    assert m["train_accuracy"] == pytest.approx(16 / 24)
    assert m["train_sensitivity_normal"] == 0.25 and m["test_sensitivity_normal"] == 0.0
    assert m["chance_level"] == pytest.approx(1 / 3) and m["at_chance"] is True
    assert m["test_accuracy_last3"] == pytest.approx(0.625)  # two evaluations only
    assert m["sample_passes"] == 64  # last history row
    assert m["pooled_budget"] is None  # a FedAvg run


def test_run_metrics_recomputes_balanced_accuracy_for_runs_that_predate_it(tmp_path):
    path = write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((8, 4, 2)))
    final = results.load_run(path).final
    del final["test"]["balanced_accuracy"]
    write_json(path / "final.json", final)
    assert results.run_metrics(results.load_run(path))["test_balanced_accuracy"] == pytest.approx((1 + 0.5 + 0.25) / 3)


def test_sample_passes_fall_back_to_final_json_without_history(tmp_path):
    path = write_run(tmp_path, "resnet18", "central", 0, test=diagonal((4, 4, 4)))
    (path / "history.csv").unlink()
    assert math.isnan(results.sample_passes(results.load_run(path)))
    final = results.load_run(path).final
    write_json(path / "final.json", {**final, "sample_passes": 480})
    assert results.sample_passes(results.load_run(path)) == 480


@pytest.mark.parametrize(
    "config, rule",
    [
        ({"pooled_budget": "paper", "rounds": 100, "local_epochs": 3}, "paper (R x E = 300 epochs)"),
        # max(int(0.4 x 5), 1) = 2 of 5 clients a round: ceil(100 x 3 x 2 / 5) = 120 epochs
        (
            {"pooled_budget": "matched", "rounds": 100, "local_epochs": 3, "clients": 5, "fraction": 0.4},
            "matched (FedAvg's sample passes: R x E x C = 120 epochs)",
        ),
        ({"pooled_budget": "paper", "central_epochs": 8}, "fixed (8 epochs, central_epochs)"),
    ],
)
def test_pooled_budget_rule_says_how_many_epochs(config, rule):
    assert results.pooled_budget_rule(config) == rule


# ---------------------------------------------------------------- one run folder


def test_load_run_reads_clients_csv_long_format_and_an_empty_table_without_it(tmp_path):
    path = write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)))
    assert results.load_run(path).clients.empty  # pooled runs and older runs have none
    (path / "clients.csv").write_text(
        "round,attempt,client,status,reason,num_examples,train_loss,epsilon\n"
        "1,1,0,used,,16,0.9,1.5\n1,1,2,dropped,raised RuntimeError,16,,\n1,2,1,used,,16,0.8,1.5\n"
    )
    clients = results.load_run(path).clients
    assert list(clients.columns[:7]) == ["round", "attempt", "client", "status", "reason", "num_examples", "train_loss"]
    assert clients.groupby("status")["client"].apply(list).to_dict() == {"dropped": [2], "used": [0, 1]}
    assert clients["epsilon"].dropna().tolist() == [1.5, 1.5]


def test_load_run_opens_an_unfinished_run_only_when_asked(tmp_path):
    path = write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)), rows=history([1.0], 32))
    (path / "final.json").unlink()  # still training after round 1
    with pytest.raises(UserError, match="no finished run .*train it first"):
        results.load_run(path)
    run = results.load_run(path, finished=False)
    assert run.final == {} and not run.finished and run.config["model"] == "resnet18"
    assert run.history["round"].tolist() == [1]
    with pytest.raises(UserError, match="holds no run"):
        results.load_run(tmp_path / "nothing", finished=False)


@pytest.mark.parametrize("text, words", [("{not json", "unreadable config.json"), ("[1, 2]", "not a mapping")])
def test_load_run_refuses_a_damaged_config_in_one_sentence(tmp_path, text, words):
    path = write_run(tmp_path, "resnet18", "fedavg", 0, test=diagonal((4, 4, 4)))
    (path / "config.json").write_text(text)
    for finished in (True, False):
        with pytest.raises(UserError, match=words):
            results.load_run(path, finished=finished)


def test_load_model_returns_the_checkpointed_model_in_eval_mode(tmp_path):
    from fedlib.models import build_model
    from fedlib.run.io import save_checkpoint

    path = write_run(tmp_path, "mobilenet_v2", "fedavg", 0, test=diagonal((4, 4, 4)))
    run = results.load_run(path)
    with pytest.raises(UserError, match="no checkpoints/last.pt"):
        run.load_model()
    trained = build_model("mobilenet_v2", num_classes=3, norm=run.train_config.model_norm)
    save_checkpoint(path, {"model": trained.state_dict()})
    model = run.load_model()
    assert not model.training and run.train_config.model == "mobilenet_v2"
    for (name, a), b in zip(trained.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    local = results.load_run(write_run(tmp_path, "mobilenet_v2", "local", 0, test=diagonal((4, 4, 4))))
    with pytest.raises(UserError, match="local-only run"):
        local.load_model()
