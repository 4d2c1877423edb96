"""SCAFFOLD (fedlib/strategy/scaffold.py): the control-variate arithmetic of the client and the
server by hand, then runs on every engine (in-process, --parallel-clients, flower-sim)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import assert_same_weights, smoke, weights
from torch import nn

from fedlib import config
from fedlib.client import ExtendedUpdate, Update
from fedlib.run import io
from fedlib.runner import train as run
from fedlib.strategy import NAMES, build, check
from fedlib.strategy.scaffold import ControlVariates
from fedlib.train import LocalSpec, local_train, pick_hardware


class Weights(nn.Module):
    """One trainable vector ``w`` and a buffer, as a model's state dict has both."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float32))
        self.register_buffer("count", torch.tensor(0))


def test_scaffold_is_registered():
    assert "scaffold" in NAMES and NAMES[-1] == "scaffold"
    strategy = build("scaffold")
    assert strategy.server_lr == 1.0 and strategy.needs_each_update and not strategy.supports_dp
    assert strategy.proximal_mu == 0.0 and not strategy.keeps_norm_local and not strategy.personal


def test_client_corrects_each_step_and_computes_option_ii_by_hand():
    # Loss w . a with a = (1, 1): the gradient is (1, 1) at every step. With c = (0.5, -1) and
    # c_i = (0.25, 0.25) each step follows g + c - c_i = (1.25, -0.25); two SGD steps of lr 0.1
    # move w = (1, 2) to (0.75, 2.05). Option II: c_i+ = c_i - c + (x - y) / (K lr)
    # = (0.25 - 0.5 + 1.25, 0.25 + 1 - 0.25) = (1, 1), so delta c_i = (0.75, 0.75).
    model = Weights([1.0, 2.0])
    hook = ControlVariates({"w": torch.tensor([0.5, -1.0])}, {"w": torch.tensor([0.25, 0.25])})
    hook.start(model, SimpleNamespace(lr=0.1))
    a = torch.tensor([1.0, 1.0])
    for _ in range(2):
        model.w.grad = None
        hook.loss((model.w * a).sum()).backward()
        hook.before_step()
        with torch.no_grad():
            model.w -= 0.1 * model.w.grad
    torch.testing.assert_close(model.w.detach(), torch.tensor([0.75, 2.05]))
    delta = hook.finish(model)
    assert set(delta) == {"w"} and delta["w"].dtype == torch.float64
    # y is float32: (x - y) / 0.2 carries its rounding (about 1e-6)
    torch.testing.assert_close(delta["w"], torch.tensor([0.75, 0.75], dtype=torch.float64), atol=1e-5, rtol=0)


def test_zero_control_variates_leave_local_training_unchanged_bit_for_bit():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8), rng.integers(0, 3, 12)
    results = []
    for hooked in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * 3, 3))
        zeros = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
        hook = ControlVariates(zeros, zeros) if hooked else None
        spec = LocalSpec(epochs=2, batch_size=4, lr=0.01, weight_decay=0.0, image_size=16, seed=3, hw=CPU, hook=hook)
        res = local_train(model, images, labels, np.arange(12), spec)
        results.append((res, model.state_dict()))
    (plain, a), (hooked, b) = results
    assert plain.loss == hooked.loss and all(torch.equal(a[k], b[k]) for k in a)
    assert plain.extra == {} and set(hooked.extra) == {"1.weight", "1.bias"}
    # K = 2 epochs x 3 batches; c = 0, so delta c_i = (x - y) / (K lr), the mean step per unit lr.
    torch.manual_seed(0)
    start = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * 3, 3)).state_dict()
    expected = (start["1.bias"].double() - b["1.bias"].double()) / (6 * 0.01)
    torch.testing.assert_close(hooked.extra["1.bias"], expected)


CPU = pick_hardware("cpu")


def test_dp_is_refused_at_the_client():
    zeros = {"0.weight": torch.zeros(3, 12), "0.bias": torch.zeros(3)}
    spec = LocalSpec(1, 2, 0.1, 0.0, 2, 0, CPU, dp=object(), hook=ControlVariates(zeros, zeros))
    with pytest.raises(ValueError, match="DP-SGD"):
        local_train(nn.Linear(12, 3), np.zeros((2, 2, 2, 3), np.uint8), np.zeros(2, int), np.arange(2), spec)


def test_server_step_by_hand():
    # N = 4 clients; clients 0 and 1 answer. x = (1, 2), y_0 = (0, 2), y_1 = (2, 4): mean (1, 3)
    # (uniform weights); server_lr 0.5: x <- x + 0.5 (mean - x) = (1, 2.5). delta c_0 = (1, 0),
    # delta c_1 = (0, 2): c <- 0 + 2/4 * mean = (0.25, 0.5); c_0 = (1, 0), c_1 = (0, 2).
    strategy = build("scaffold", server_lr=0.5)
    strategy.setup(Weights([1.0, 2.0]), num_clients=4)
    x = {"w": torch.tensor([1.0, 2.0]), "count": torch.tensor(0)}
    state, extra = strategy.client_start(x, 3)
    assert state is x and set(extra) == {"c.w", "ci.w"}
    assert torch.equal(extra["c.w"], torch.zeros(2)) and torch.equal(extra["ci.w"], torch.zeros(2))
    acc, kept = strategy.accumulator(), {}
    answers = {0: ([0.0, 2.0], [1.0, 0.0], 2), 1: ([2.0, 4.0], [0.0, 2.0], 4)}
    for c, (y, delta, count) in answers.items():
        update = ExtendedUpdate(
            {"w": torch.tensor(y), "count": torch.tensor(count)}, 10, 0.5, {}, {"w": torch.tensor(delta)}
        )
        assert strategy.check_update(update) is None
        acc.add(strategy.shared(update.state), 1.0)
        kept[c] = strategy.kept(update)
    new = strategy.next_state(x, acc.result(), kept, 0)
    torch.testing.assert_close(new["w"], torch.tensor([1.0, 2.5]))
    assert new["count"].item() == 3  # a buffer takes the aggregate
    torch.testing.assert_close(strategy.state["control"]["w"], torch.tensor([0.25, 0.5], dtype=torch.float64))
    torch.testing.assert_close(strategy.local_states[0]["w"], torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(strategy.local_states[1]["w"], torch.tensor([0.0, 2.0], dtype=torch.float64))
    _, extra = strategy.client_start(new, 1)
    assert torch.equal(extra["c.w"], torch.tensor([0.25, 0.5])) and torch.equal(extra["ci.w"], torch.tensor([0.0, 2.0]))
    assert torch.equal(strategy.client_start(new, 2)[1]["ci.w"], torch.zeros(2))  # not sampled yet
    # The server's c resumes from a checkpoint; an update without its control-variate change is dropped.
    again = build("scaffold", server_lr=0.5)
    again.load_state_dict(strategy.state_dict())
    assert torch.equal(again.state["control"]["w"], strategy.state["control"]["w"])
    assert "control-variate" in strategy.check_update(Update({"w": torch.zeros(2)}, 1, 0.0))


def test_server_lr_one_takes_the_mean_itself():
    strategy = build("scaffold")
    strategy.setup(Weights([1.0, 2.0]), num_clients=2)
    x, mean = {"w": torch.tensor([1.0, 2.0]), "count": torch.tensor(0)}, {"w": torch.tensor([0.3, 0.7])}
    assert torch.equal(strategy.next_state(x, {**mean, "count": torch.tensor(1)}, {}, 0)["w"], mean["w"])


def test_config_check_refuses_dp_and_secagg():
    with pytest.raises(ValueError, match="scaffold with differential privacy is not supported"):
        check(SimpleNamespace(strategy="scaffold", mode="fedavg", secagg=False, dp=True, **settings()))
    with pytest.raises(ValueError, match="--secagg shows the server only the sum"):
        check(SimpleNamespace(strategy="scaffold", mode="fedavg", secagg=True, dp=False, **settings()))
    with pytest.raises(ValueError, match="server learning rate must be positive"):
        check(SimpleNamespace(strategy="scaffold", mode="fedavg", secagg=False, dp=False, **settings(server_lr=0.0)))
    check(SimpleNamespace(strategy="scaffold", mode="fedavg", secagg=False, dp=False, **settings()))


def settings(**overrides):
    values = dict(server_lr=None, server_momentum=0.9, beta1=0.9, beta2=0.99, tau=1e-3, trim_fraction=0.2)
    return {**values, "proximal_mu": 0.01, "clients_per_round": 2, "clients": 2, **overrides}


def scaffold(data_dir, **overrides):
    return smoke(data_dir, rounds=2, fraction=1.0, strategy="scaffold", aggregation="uniform", **overrides)


def test_inprocess_run_keeps_each_clients_control_variate_and_parallel_clients_agree(data_dir, tmp_path):
    cfg = scaffold(data_dir)
    run(cfg, tmp_path / "seq", progress=False)
    checkpoint = io.load_checkpoint(tmp_path / "seq")
    params = set(checkpoint["strategy"]["control"])
    assert params and params < set(checkpoint["model"])  # trainable parameters only, not the buffers
    assert set(checkpoint["local_states"]) == set(range(cfg.clients))
    assert all(set(own) == params for own in checkpoint["local_states"].values())
    assert any(v.abs().sum() > 0 for v in checkpoint["strategy"]["control"].values())
    run(config.replace(cfg, parallel_clients=2), tmp_path / "par", progress=False)
    assert_same_weights(weights(tmp_path / "seq"), weights(tmp_path / "par"))
    fedavg = tmp_path / "fedavg"
    run(config.replace(cfg, strategy="fedavg"), fedavg, progress=False)
    assert any(not torch.equal(v, weights(fedavg)[k]) for k, v in weights(tmp_path / "seq").items())


def test_flower_simulation_equals_inprocess(data_dir, tmp_path):
    from fedlib.flower import run_flower

    cfg = scaffold(data_dir)
    run(cfg, tmp_path / "inprocess", progress=False)
    run_flower(config.replace(cfg, engine="flower-sim"), tmp_path / "sim", progress=False)
    assert_same_weights(weights(tmp_path / "inprocess"), weights(tmp_path / "sim"))
    a, b = io.load_checkpoint(tmp_path / "inprocess"), io.load_checkpoint(tmp_path / "sim")
    for c, own in a["local_states"].items():
        assert all(torch.equal(v, b["local_states"][c][k]) for k, v in own.items())
