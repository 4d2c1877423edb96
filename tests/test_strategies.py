"""fedlib.strategy against Flower's own strategies, and FedProx's proximal term in fedlib.train.

Parity is checked against flwr 1.42.0's strategies on the same seeded script of client updates
(each client returns the global model it was sent plus a delta, weighted by its num_examples),
through their public ``aggregate_fit(server_round, results, failures)`` (``flwr.server.strategy``;
the Message API's ``flwr.serverapp.strategy`` classes do the same maths, and their default
settings are checked against ours below). Nothing of Flower is patched or set.

fedlib's strategy must reach the same global model every round, to float32 tolerance
(Flower computes in float32, fedlib in float64).
"""

from __future__ import annotations

import inspect
import io

import numpy as np
import pytest
import torch
from torch import nn

from fedlib import strategy as strategies
from fedlib.aggregate import RunningAverage, fedavg
from fedlib.strategy import DEFAULT_SERVER_LR, NAMES, REGISTRY, build, norm_keys, proximal_term
from fedlib.strategy.fedprox import Proximal
from fedlib.train import LocalSpec, local_train, pick_hardware

SHAPES = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "fc.weight": (3, 8), "fc.bias": (3,)}
CLIENTS_PER_ROUND = (5, 4, 3)  # odd and even counts; trimmed means cut 1 from each end at 5 (0.2) or 4-5 (0.3)


def script(seed: int = 0) -> tuple[dict[str, np.ndarray], list[list[tuple[dict[str, np.ndarray], int]]]]:
    """Initial float32 arrays and, per round, each client's (delta, num_examples): a shared drift plus noise."""
    rng = np.random.default_rng(seed)
    init = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    rounds = []
    for k in CLIENTS_PER_ROUND:
        drift = {key: 0.05 * rng.standard_normal(s) for key, s in SHAPES.items()}
        rounds.append(
            [
                (
                    {key: (drift[key] + 0.1 * rng.standard_normal(s)).astype(np.float32) for key, s in SHAPES.items()},
                    int(rng.integers(10, 500)),
                )
                for _ in range(k)
            ]
        )
    return init, rounds


def run_legacy_api(make_strategy, init, rounds) -> list[dict[str, torch.Tensor]]:
    """The global model after each ``aggregate_fit`` of a legacy strategy on the scripted updates."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    current = [init[k] for k in SHAPES]
    strategy = make_strategy(ndarrays_to_parameters(current))
    out = []
    for server_round, clients in enumerate(rounds, 1):
        results = [
            (
                None,
                FitRes(
                    Status(Code.OK, ""),
                    ndarrays_to_parameters([c + delta[k] for c, k in zip(current, SHAPES, strict=True)]),
                    n,
                    {},
                ),
            )
            for delta, n in clients
        ]  # the aggregation never reads the client proxy
        parameters, _ = strategy.aggregate_fit(server_round, results, [])
        current = parameters_to_ndarrays(parameters)
        out.append({k: torch.from_numpy(a.copy()) for k, a in zip(SHAPES, current, strict=True)})
    return out


def run_ours(strategy, init, rounds, start: int = 0, global_state=None) -> list[dict[str, torch.Tensor]]:
    """The global model after each round of ``strategy`` on the same updates (rounds from ``start``)."""
    current = global_state or {k: torch.from_numpy(v.copy()) for k, v in init.items()}
    out = []
    for round_idx, clients in enumerate(rounds[start:], start):
        acc = strategy.accumulator()
        for delta, n in clients:
            acc.add({k: current[k] + torch.from_numpy(delta[k]) for k in current}, n)
        current = strategy.server_step(current, acc.result(), round_idx)
        out.append(current)
    return out


# id: (fedlib's build arguments, Flower class name, its settings in both APIs). The Message API's
# defaults are fedlib's, so most cases give Flower's constructor nothing; the legacy API's tau
# defaults differ (1e-9 for FedAdam and FedAdagrad), so its settings are spelled out.
CASES = {
    "fedavgm": (("fedavgm", {}), "FedAvgM", {"server_momentum": 0.9}),
    "fedavgm-lr0.5-nomomentum": (
        ("fedavgm", {"server_lr": 0.5, "server_momentum": 0.0}),
        "FedAvgM",
        {"server_learning_rate": 0.5, "server_momentum": 0.0},
    ),
    "fedadam": (("fedadam", {}), "FedAdam", {}),
    "fedadam-custom": (
        ("fedadam", {"server_lr": 0.03, "beta1": 0.5, "beta2": 0.9, "tau": 1e-2}),
        "FedAdam",
        {"eta": 0.03, "beta_1": 0.5, "beta_2": 0.9, "tau": 1e-2},
    ),
    "fedyogi": (("fedyogi", {}), "FedYogi", {}),
    "fedadagrad": (("fedadagrad", {}), "FedAdagrad", {}),
    "median": (("median", {}), "FedMedian", {}),
    "trimmed_mean": (("trimmed_mean", {}), "FedTrimmedAvg", {}),
    "trimmed_mean-0.3": (("trimmed_mean", {"trim_fraction": 0.3}), "FedTrimmedAvg", {"beta": 0.3}),
}
LEGACY_DEFAULTS = {"FedAdam": {"tau": 1e-3}, "FedAdagrad": {"tau": 1e-3}}


def assert_same_rounds(ours, theirs, init):
    """Same values every round. fedlib keeps float32; Flower's FedAdam returns float64 arrays (NumPy 2
    promotes float32 arrays times its np.float64 step size), so values are compared in float32."""
    previous = {k: torch.from_numpy(v) for k, v in init.items()}
    for r, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for key in SHAPES:
            assert a[key].dtype == torch.float32
            torch.testing.assert_close(
                a[key], b[key].to(torch.float32), msg=lambda m, r=r, key=key: f"round {r}, {key}: {m}"
            )
            assert not torch.allclose(a[key], previous[key])  # the model moved
        previous = a


@pytest.mark.parametrize("case", CASES)
def test_same_global_model_as_flower_legacy_api(case):
    """flwr.server.strategy (flwr 1.42.0), the same strategies through ``aggregate_fit``."""
    import flwr.server.strategy as flower

    (name, ours_kwargs), cls, settings = CASES[case]
    init, rounds = script(seed=100 + list(CASES).index(case))
    settings = {**LEGACY_DEFAULTS.get(cls, {}), **settings}
    theirs = run_legacy_api(lambda p: getattr(flower, cls)(initial_parameters=p, **settings), init, rounds)
    assert_same_rounds(run_ours(build(name, **ours_kwargs), init, rounds), theirs, init)


def test_defaults_are_flowers():
    """DEFAULT_SERVER_LR and build's betas and tau equal the constructor defaults of flwr 1.42.0's strategies."""
    from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedTrimmedAvg, FedYogi

    def default(cls, arg):
        return inspect.signature(cls).parameters[arg].default

    ours = {name: cls.settings for name, cls in REGISTRY.items()}  # each strategy's defaults (were build's)
    assert DEFAULT_SERVER_LR == {
        "fedavgm": default(FedAvgM, "server_learning_rate"),
        "fedadam": default(FedAdam, "eta"),
        "fedyogi": default(FedYogi, "eta"),
        "fedadagrad": default(FedAdagrad, "eta"),
    }
    for name, cls in (("fedadam", FedAdam), ("fedyogi", FedYogi)):
        assert (ours[name]["beta1"], ours[name]["beta2"]) == (default(cls, "beta_1"), default(cls, "beta_2"))
        assert ours[name]["tau"] == default(cls, "tau")
    assert ours["fedadagrad"]["tau"] == default(FedAdagrad, "tau")
    assert ours["trimmed_mean"]["trim_fraction"] == default(FedTrimmedAvg, "beta")
    assert default(FedAvgM, "server_momentum") == 0.0 and ours["fedavgm"]["server_momentum"] == 0.9  # ours is on


def _states(seed=0, count=4):
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "w": torch.randn(3, 2, generator=gen),
            "b": torch.randn(2, generator=gen),
            "bn.num_batches_tracked": torch.tensor(10 + 3 * i),
        }
        for i in range(count)
    ]


def run_ours_once(strategy, states, counts, global_state=None, round_idx=0):
    """One round of ``strategy`` on ``states`` weighted by ``counts``."""
    acc = strategy.accumulator()
    for s, n in zip(states, counts, strict=True):
        acc.add(s, n)
    return strategy.server_step(global_state or states[0], acc.result(), round_idx)


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedbn"])
def test_fedavg_family_is_weighted_fedavg_exactly(name):
    states, counts = _states(), [5, 17, 2, 40]
    strategy = build(name)
    acc = strategy.accumulator()
    assert isinstance(acc, RunningAverage)
    for s, n in zip(states, counts, strict=True):
        acc.add(s, n)
    out = strategy.server_step(states[0], acc.result(), 0)
    expected = fedavg(states, counts, "weighted")
    assert out.keys() == expected.keys()
    assert all(torch.equal(out[k], expected[k]) for k in out)


def test_fedavgm_without_momentum_at_lr_one_is_fedavg_exactly():
    states, counts = _states(), [5, 17, 2, 40]
    out = run_ours_once(build("fedavgm", server_momentum=0.0), states, counts)
    expected = fedavg(states, counts, "weighted")
    assert all(torch.equal(out[k], expected[k]) for k in out)


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_resumed_server_state_continues_exactly(name):
    init, rounds = script(seed=7)
    straight = run_ours(build(name), init, rounds)
    first = build(name)
    two = run_ours(first, init, rounds[:2])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # as a checkpoint holds it
    buffer.seek(0)
    resumed = build(name)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    third = run_ours(resumed, init, rounds, start=2, global_state=two[-1])
    assert all(torch.equal(third[0][k], straight[2][k]) for k in SHAPES)
    # and a fresh strategy without the state does not
    fresh = run_ours(build(name), init, rounds, start=2, global_state=two[-1])
    assert not all(torch.equal(fresh[0][k], straight[2][k]) for k in SHAPES)


def test_server_state_of_another_strategy_is_refused():
    adam = build("fedadam")
    run_ours(adam, *script())
    with pytest.raises(ValueError, match="fedadam"):
        build("fedyogi").load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="fedavgm"):
        build("fedavg").load_state_dict(build("fedavgm").state_dict())
    build("median").load_state_dict(build("median").state_dict())


def test_integer_buffers_take_the_rounded_mean_under_fedadam():
    states, counts = _states(count=3), [1, 1, 2]  # num_batches_tracked 10, 13, 16 -> (10 + 13 + 32) / 4 = 13.75
    global_state = {"w": torch.zeros(3, 2), "b": torch.zeros(2), "bn.num_batches_tracked": torch.tensor(4)}
    out = run_ours_once(build("fedadam"), states, counts, global_state)
    assert out["bn.num_batches_tracked"].dtype == torch.int64
    assert out["bn.num_batches_tracked"].item() == 14
    assert out["w"].dtype == torch.float32
    assert not torch.allclose(out["w"], fedavg(states, counts)["w"])  # the floats took Adam's step


@pytest.mark.parametrize("name", ["median", "trimmed_mean"])
def test_robust_aggregations_are_unweighted_and_round_integers(name):
    # num_batches_tracked 10, 13, 16, 19, 22: median 16, trimmed (cut 1 each end) 16; a weight of 1000
    # on the second client is ignored. Of 10, 13, 16, 19 both give 14.5, which rounds half to even.
    for count, value in ((5, 16), (4, 14)):
        out = run_ours_once(build(name), _states(count=count), [1, 1000, 1, 1, 1][:count])
        assert out["bn.num_batches_tracked"].dtype == torch.int64
        assert out["bn.num_batches_tracked"].item() == value
    states = _states(count=5)
    out = run_ours_once(build(name), states, [1, 1000, 1, 1, 1])
    ordered = torch.stack([s["w"] for s in states]).double().sort(dim=0).values
    expected = ordered[2] if name == "median" else ordered[1:4].mean(dim=0)
    torch.testing.assert_close(out["w"], expected.float())


def test_check_clients_per_round():
    for name in ("median", "trimmed_mean"):
        message = build(name).check_clients_per_round(2)
        assert message and "mean" in message and "--fraction" in message
    message = build("trimmed_mean").check_clients_per_round(4)  # int(0.2 * 4) = 0
    assert "--trim-fraction" in message and "at least 5 clients" in message and "0.25" in message
    assert build("trimmed_mean", trim_fraction=0.25).check_clients_per_round(4) is None
    assert build("trimmed_mean").check_clients_per_round(10) is None
    assert build("median").check_clients_per_round(3) is None
    for name in NAMES:
        if name not in ("median", "trimmed_mean"):
            assert build(name).check_clients_per_round(1) is None
            assert build(name).min_updates() == 1
    assert build("median").min_updates() == 3
    assert build("trimmed_mean").min_updates() == 5
    assert build("trimmed_mean", trim_fraction=0.4).min_updates() == 3


def test_build_checks_names_and_settings():
    with pytest.raises(ValueError, match="fedavgm"):
        build("fedsgd")
    for name, lr in DEFAULT_SERVER_LR.items():
        assert build(name).server_lr == lr
    assert build("fedadam", server_lr=0.5).server_lr == 0.5
    with pytest.raises(ValueError, match="no server learning rate"):
        build("fedavg", server_lr=0.1)
    with pytest.raises(ValueError, match="trim_fraction"):
        build("trimmed_mean", trim_fraction=0.5)
    with pytest.raises(ValueError, match="tau"):
        build("fedyogi", tau=0)
    build("median", trim_fraction=0.9)  # settings of other strategies are not read
    assert build("fedprox", proximal_mu=0.1).proximal_mu == 0.1
    assert [build(n).proximal_mu > 0 for n in NAMES] == [n == "fedprox" for n in NAMES]
    assert [build(n).keeps_norm_local for n in NAMES] == [n == "fedbn" for n in NAMES]
    assert [build(n).name for n in NAMES] == list(NAMES)
    assert isinstance(build("fedyogi"), strategies.ServerOptimizer)


def test_norm_keys_of_resnet18():
    from torchvision.models import resnet18

    model = resnet18(num_classes=3)
    keys = norm_keys(model)
    state = model.state_dict()
    assert keys <= set(state)
    assert {k for k in state if k.endswith("running_mean")} <= keys
    assert {
        "bn1.weight",
        "bn1.bias",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer2.0.downsample.1.running_mean",
    } <= keys
    assert not {k for k in keys if "conv" in k or k.startswith("fc") or k == "layer2.0.downsample.0.weight"}


def test_norm_keys_of_group_and_layer_norm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LayerNorm(4), nn.Linear(4, 2))
    assert norm_keys(model) == {"1.weight", "1.bias", "3.weight", "3.bias"}


# ---------------------------------------------------------------- FedProx (client side)


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


def _train(mu=None, seed=0):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 24)
    model = _tiny_model(seed)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    hook = None if mu is None else build("fedprox", proximal_mu=mu).client_hook(None)
    spec = LocalSpec(
        epochs=3,
        batch_size=8,
        lr=0.05,
        weight_decay=0.0,
        image_size=16,
        seed=1,
        hw=pick_hardware("cpu", None, None),
        hook=hook,
    )
    res = local_train(model, images, labels, np.arange(24), spec)
    return start, model.state_dict(), res.loss


def _distance(start, end):
    keys = [k for k in start if k.endswith(("weight", "bias"))]
    return sum(((end[k] - start[k]) ** 2).sum().item() for k in keys) / sum(start[k].numel() for k in keys)


def test_fedprox_with_mu_zero_is_plain_training_bit_for_bit():
    _, plain, plain_loss = _train()
    _, zero, zero_loss = _train(mu=0.0)
    assert plain_loss == zero_loss
    assert all(torch.equal(plain[k], zero[k]) for k in plain)


def test_fedprox_keeps_weights_closer_to_the_global_model():
    start, plain, plain_loss = _train(mu=0.0)
    _, prox, prox_loss = _train(mu=1.0)
    assert _distance(start, prox) < 0.8 * _distance(start, plain)
    assert np.isfinite(prox_loss) and prox_loss != plain_loss


def test_proximal_term_gradient():
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 2, generator=gen, requires_grad=True), torch.randn(4, generator=gen, requires_grad=True)]
    anchor = [p.detach().clone() for p in params]
    term = proximal_term(params, anchor, 0.3)
    term.backward()
    assert term.item() == 0.0
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in params)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen))
            p.grad = None
    assert all(not torch.equal(p, a) for p, a in zip(params, anchor, strict=True))  # the anchor is a copy
    term = proximal_term(params, anchor, 0.3)
    term.backward()
    torch.testing.assert_close(term, 0.15 * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True)))
    for p, a in zip(params, anchor, strict=True):
        torch.testing.assert_close(p.grad, 0.3 * (p - a).detach())
        assert a.grad is None and not a.requires_grad


def test_fedprox_with_dp_is_refused():
    with pytest.raises(ValueError, match="DP-SGD"):
        spec = LocalSpec(
            epochs=1,
            batch_size=2,
            lr=0.1,
            weight_decay=0.0,
            image_size=16,
            seed=0,
            hw=pick_hardware("cpu"),
            dp=object(),
            hook=Proximal(0.1),
        )
        local_train(_tiny_model(), np.zeros((2, 16, 16, 3), np.uint8), np.zeros(2, int), np.arange(2), spec)
