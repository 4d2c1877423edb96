"""Every strategy as a whole run: it trains, it differs from FedAvg where it should, and a run
interrupted mid-round resumes to the same weights, history and clients.csv (the server
optimizer's state and FedBN's per-hospital layers are in the checkpoint)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same_weights, history_without_time, smoke, weights

from fedlib import config
from fedlib.errors import UserError
from fedlib.run import io
from fedlib.runner import train as run
from fedlib.strategy import NAMES
from fedlib.train import local_train


class Interrupted(BaseException):
    """Like a KeyboardInterrupt: the whole process stops."""


def five_sites(data_dir, **overrides):
    # Five clients a round: the trimmed mean (0.2) then cuts one update at each end.
    return smoke(data_dir, rounds=2, clients=5, fraction=1.0, synth_n_train=60, **overrides)


@pytest.fixture(scope="module")
def fedavg_weights(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fedavg") / "r"
    run(five_sites(data_dir), out, progress=False)
    return weights(out)


@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_trains_and_resumes_exactly(data_dir, tmp_path, monkeypatch, name, fedavg_weights):
    cfg = five_sites(data_dir, strategy=name, proximal_mu=0.5)
    run(cfg, tmp_path / "full", progress=False)
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:  # round 2, second client
            raise Interrupted
        return local_train(*args, **kwargs)

    monkeypatch.setattr("fedlib.client.local_train", crashing)
    with pytest.raises(Interrupted):
        run(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr("fedlib.client.local_train", local_train)
    run(cfg, tmp_path / "cut", resume=True, progress=False)
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "cut"))
    assert history_without_time(tmp_path / "full") == history_without_time(tmp_path / "cut")
    assert io.read_history(tmp_path / "full" / "clients.csv") == io.read_history(tmp_path / "cut" / "clients.csv")
    final = io.read_json(tmp_path / "full" / "final.json")
    assert final["strategy"] == name and io.read_json(tmp_path / "full" / "config.json")["strategy"] == name
    differs = any(not torch.equal(v, fedavg_weights[k]) for k, v in weights(tmp_path / "full").items())
    assert differs == (name != "fedavg")


def test_fedprox_with_mu_zero_is_fedavg_bit_for_bit(data_dir, tmp_path, fedavg_weights):
    run(five_sites(data_dir, strategy="fedprox", proximal_mu=0.0), tmp_path / "r", progress=False)
    assert_same_weights(weights(tmp_path / "r"), fedavg_weights)


def test_fedbn_keeps_each_hospitals_norm_layers_and_evaluates_with_them(data_dir, tmp_path):
    run(five_sites(data_dir, strategy="fedbn"), tmp_path / "r", progress=False)
    checkpoint = io.load_checkpoint(tmp_path / "r")
    local = checkpoint["local_states"]
    assert sorted(local) == [0, 1, 2, 3, 4]
    key = next(k for k in local[0] if k.endswith("running_mean"))
    assert not torch.equal(local[0][key], local[1][key])  # each hospital its own statistics
    assert all(k not in local[0] for k in checkpoint["model"] if k.endswith("conv1.weight"))
    final = io.read_json(tmp_path / "r" / "final.json")
    assert len(final["per_client"]) == 5
    mean = sum(c["test"]["accuracy"] for c in final["per_client"]) / 5
    assert final["test"]["accuracy"] == pytest.approx(mean)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(strategy="median"), "median of 2 client"),
        (dict(strategy="trimmed_mean", clients=4, fraction=1.0), "it is the plain mean"),
        (dict(strategy="fedadam", mode="central"), "needs --mode fedavg"),
        (dict(strategy="fedavg", server_lr=0.1), "has no server learning rate"),
        (dict(strategy="fedprox", dp_noise_multiplier=1.0), "fedprox with differential privacy"),
        (dict(strategy="fedbn", engine="flower-sim", secagg=True), "--secagg shows the server only the sum"),
        (dict(strategy="fedyogi", beta2=1.0), "beta1 and beta2 must be in"),
    ],
)
def test_strategy_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(UserError, match=message):
        config.resolve("smoke", **{"clients": 3, "fraction": 0.67, **overrides})
