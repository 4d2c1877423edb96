import json

import pytest

from fedlib import config
from fedlib.errors import UserError


def test_paper_profile_is_the_papers_table_1():
    cfg = config.resolve("paper")
    assert (cfg.clients, cfg.fraction, cfg.rounds, cfg.local_epochs, cfg.batch_size) == (5, 0.4, 100, 3, 10)
    assert (cfg.lr, cfg.weight_decay, cfg.image_size) == (2e-5, 1e-7, 224)
    assert cfg.clients_per_round == 2
    assert cfg.pooled_epochs == 300
    # The rest of the protocol as the authors' code runs it, each a way the profile could drift:
    assert cfg.partition == "iid"  # equal random shares
    assert cfg.keep_optimizer_state is False  # Adam created afresh at each local update
    assert cfg.aggregation == "weighted"  # = the authors' plain mean for equal IID shares (README deviations)
    assert cfg.val_fraction == 0 and cfg.class_weight == "none"  # every training image trains, unweighted
    assert cfg.pooled_budget == "paper" and cfg.central_epochs is None
    from fedlib.train import pick_hardware

    assert cfg.amp is None and pick_hardware("cpu", cfg.amp).amp is False  # float32: bf16 is opt-in
    assert cfg.model_norm == "batch" and cfg.engine == "inprocess"
    # The fastest options that keep the updates: the round's two clients at once; no compilation (other rounding).
    assert cfg.parallel_clients == cfg.clients_per_round and cfg.compile is False


def test_matched_pooled_budget_makes_fedavgs_sample_passes():
    cfg = config.resolve("paper", pooled_budget="matched")
    # FedAvg: R x E x (C x K) / K epochs' worth of images = 100 x 3 x 2 / 5 = 120 epochs
    assert cfg.pooled_epochs == 120
    assert (
        config.resolve("paper", pooled_budget="matched", central_epochs=7).pooled_epochs == 7
    )  # an explicit count wins
    quick = config.resolve("quick")  # 12 rounds x 2 epochs x 2 of 5 clients = 9.6 epochs, rounded up
    assert (quick.pooled_budget, quick.central_epochs, quick.pooled_epochs) == ("matched", None, 10)


def test_precedence_defaults_profile_file_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rounds: 7\nbatch_size: 4\n")
    cfg = config.resolve("quick", path, batch_size=5, lr=None)
    assert cfg.image_size == config.PROFILES["quick"]["image_size"]  # profile
    assert cfg.rounds == 7  # file
    assert cfg.batch_size == 5  # CLI beats file
    assert cfg.lr == config.PROFILES["quick"]["lr"]  # None = not given


def test_saved_config_round_trips(tmp_path):
    cfg = config.resolve("smoke", seed=3)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict(cfg)))
    assert config.resolve("paper", path) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"fraction": 0.0}, r"--fraction must be in \(0, 1\], got 0.0"),
        ({"fraction": 1.5}, r"--fraction must be in \(0, 1\], got 1.5"),
        ({"rounds": 0}, "--rounds must be an integer of at least 1, got 0"),
        ({"batch_size": 0}, "--batch-size must be an integer of at least 1, got 0"),
        ({"partition": "shards"}, "unknown partition 'shards'"),
        ({"model": "vgg16"}, "unknown model 'vgg16'; choose one of covidnet_small"),
        ({"mode": "swarm"}, "unknown mode 'swarm'"),
        ({"lr": float("nan")}, "--lr must be a finite non-negative number, got nan"),
        ({"lr": float("inf")}, "--lr must be a finite non-negative number, got inf"),
        ({"image_size": 16}, "--image-size must be an integer from 32 to 1024"),
    ],
)
def test_invalid_values_fail_with_one_sentence(overrides, message):
    with pytest.raises(UserError, match=message):
        config.resolve("smoke", **overrides)


def test_unknown_key_in_config_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"rounds": 2, "learning_rate": 0.1}))
    with pytest.raises(UserError, match="unknown key\\(s\\) learning_rate"):
        config.resolve("smoke", path)


def test_missing_and_malformed_config_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        config.resolve("smoke", tmp_path / "nope.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{rounds: ")
    with pytest.raises(UserError, match="not valid JSON/YAML"):
        config.resolve("smoke", bad)


def test_quick_profile_keeps_the_papers_lr_for_covidnet_unless_given():
    assert config.resolve("quick", model="covidnet_small").lr == 2e-5
    assert config.resolve("quick", model="resnet18").lr == config.PROFILES["quick"]["lr"]
    assert config.resolve("quick", model="covidnet_small", lr=1e-4).lr == 1e-4


def test_quick_profile_keeps_adam_state_for_resnext_and_the_cli_can_turn_it_off():
    from fedlib.cli import build_parser, train_config

    def cli(*argv):
        return train_config(build_parser().parse_args(["train", "--out", "x", "--model", *argv]))

    assert cli("resnext50_32x4d").keep_optimizer_state is True
    assert cli("resnext50_32x4d", "--no-keep-optimizer-state").keep_optimizer_state is False
    assert cli("resnet18").keep_optimizer_state is False
    assert cli("resnet18", "--keep-optimizer-state").keep_optimizer_state is True
    assert cli("resnext50_32x4d", "--profile", "paper").keep_optimizer_state is False  # the authors' way


def test_every_field_has_a_section_and_help():
    import dataclasses

    for f in dataclasses.fields(config.TrainConfig):
        assert f.metadata["section"] in config.SECTIONS, f.name
        assert f.metadata["help"].strip(), f.name
        assert "%" not in f.metadata["help"], f.name  # argparse would read it as a format
        flag = f.metadata["flag"]
        assert flag is None or flag == "--" + f.name.replace("_", "-"), f.name  # errors name the flag so
    assert {f.metadata["section"] for f in dataclasses.fields(config.TrainConfig)} == set(config.SECTIONS)
    assert len(config.SECTIONS) <= 8


def test_resume_changeable_is_the_fields_marked_resumable():
    import dataclasses

    marked = [f.name for f in dataclasses.fields(config.TrainConfig) if f.metadata["resume"]]
    assert config.RESUME_CHANGEABLE == tuple(marked)
    # how a run executes and how far it goes, not what it learns: the same set as before the metadata
    assert set(config.RESUME_CHANGEABLE) == {
        *("rounds", "central_epochs", "device", "amp", "channels_last", "eval_batch_size", "parallel_clients"),
        *("compile", "eval_every", "checkpoint_every", "client_timeout", "min_clients", "round_retries"),
        *("data", "data_dir"),
        "task",  # "auto" resolves to what config.json holds; another task changes the fingerprint
    }


def test_help_names_every_model_and_strategy():
    from fedlib.models import MODEL_NAMES
    from fedlib.strategy import NAMES

    help_ = {name: f.metadata["help"] for name, f in config.FIELDS.items()}
    assert all(m in help_["model"] for m in MODEL_NAMES)
    assert all(s in help_["strategy"].split(" | ") for s in NAMES)
    assert all(p in config.PROFILES for p in config.PROFILE_MODEL_OVERRIDES)


def test_a_field_needs_a_known_section():
    with pytest.raises(ValueError, match="unknown section"):
        config.knob(1, "misc", "a knob in no section")
