"""What leaves a site, and differential privacy (tiny synthetic data, CPU)."""

from __future__ import annotations

import numbers

import pytest
import torch
from conftest import assert_same_weights, smoke, weights

from fedlib import client, privacy
from fedlib.client import Update
from fedlib.run import io
from fedlib.runner import train as run


def assert_only_parameters_counts_and_scalars(update: Update, global_state: dict, secrets: set[str]) -> None:
    """The whole of an Update: tensors named and shaped like the global model's, one
    integer count, scalar metrics; no image-shaped tensor, no file name, no patient id."""
    assert isinstance(update, Update)
    assert set(vars(update)) == {"state", "num_examples", "loss", "metrics"}
    assert set(update.state) == set(global_state)
    for key, value in update.state.items():
        assert isinstance(value, torch.Tensor) and value.shape == global_state[key].shape, key
        assert value.dtype == global_state[key].dtype, key
    assert type(update.num_examples) is int
    assert isinstance(update.loss, float)
    for key, value in update.metrics.items():
        assert isinstance(key, str) and isinstance(value, numbers.Real) and not isinstance(value, bool), key
    words = " ".join([*update.state, *update.metrics])
    assert not any(secret in words for secret in secrets)


@pytest.mark.parametrize("dp", [None, 1.0])
def test_a_client_hands_back_only_parameters_counts_and_scalars(data_dir, tmp_path, monkeypatch, dp):
    seen: list[tuple[Update, dict]] = []
    real_fit = client.fit

    def spy(model, *args, **kwargs):
        global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        update, opt_state = real_fit(model, *args, **kwargs)
        seen.append((update, global_state))
        return update, opt_state

    monkeypatch.setattr(client, "fit", spy)
    # MobileNet-v2: what a client hands back does not depend on the model, and DP-SGD takes
    # about half ResNet-18's time at 32 px (ResNet-18 trains with DP in the epsilon test below).
    cfg = smoke(data_dir, rounds=2, dp_noise_multiplier=dp, model="mobilenet_v2")
    run(cfg, tmp_path / "r", progress=False)
    from fedlib.experiment import setup

    data = setup(cfg, tmp_path / "r", progress=False).data
    secrets = {r.filename for r in data.train_records} | {r.patient_id for r in data.train_records}
    assert len(seen) == cfg.rounds * cfg.clients_per_round
    for update, global_state in seen:
        assert_only_parameters_counts_and_scalars(update, global_state, secrets)


def test_dp_noise_is_seeded_and_changes_the_model(data_dir, tmp_path):
    # MobileNet-v2 (BatchNorm, and dropout drawn from the seeded generator): half ResNet-18's time under DP-SGD.
    for name, sigma in (("a", 1.0), ("b", 1.0), ("c", 2.0)):
        cfg = smoke(data_dir, rounds=1, dp_noise_multiplier=sigma, model="mobilenet_v2")
        run(cfg, tmp_path / name, progress=False)
    a, c = weights(tmp_path / "a"), weights(tmp_path / "c")
    assert_same_weights(a, weights(tmp_path / "b"))
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert not any("running_mean" in k for k in a)  # BatchNorm became GroupNorm


def test_spent_epsilon_is_recorded_per_client_per_round(data_dir, tmp_path):
    cfg = smoke(data_dir, rounds=2, dp_noise_multiplier=1.5)
    final = run(cfg, tmp_path / "r", progress=False)
    steps: dict[int, int] = {}
    spent: dict[int, float] = {}
    answers = io.read_history(tmp_path / "r" / "clients.csv")
    for row in io.read_history(tmp_path / "r" / "history.csv"):
        recorded = {int(a["client"]): float(a["epsilon"]) for a in answers if a["round"] == row["round"]}
        assert len(recorded) == int(row["clients_used"])
        assert float(row["epsilon_max"]) == pytest.approx(max({**spent, **recorded}.values()), rel=1e-6)
        for c, eps in recorded.items():
            n = final["client_sizes"][c]
            steps[c] = steps.get(c, 0) + privacy.steps_per_update(n, cfg)
            expected = privacy.epsilon(privacy.settings(cfg, n), steps[c], cfg.dp_delta)
            assert eps == pytest.approx(expected, rel=1e-3)
            assert eps > spent.get(c, 0.0)  # a client that takes part again spends more
            spent[c] = eps
    assert sum(steps.values()) > len(steps) * min(steps.values())  # some client took part twice
    assert final["privacy"]["epsilon_max"] == pytest.approx(max(spent.values()), rel=1e-3)


def test_a_target_epsilon_is_never_exceeded(data_dir, tmp_path):
    cfg = smoke(data_dir, rounds=2, fraction=1.0, dp_target_epsilon=20.0, model="mobilenet_v2")  # all, always
    final = run(cfg, tmp_path / "r", progress=False)
    spent = final["privacy"]["epsilon_per_client"].values()
    assert len(spent) == cfg.clients
    assert all(15.0 < eps <= 20.0 for eps in spent)  # close to the budget, never over it
