"""Federated strategies: how a round's client updates become the next global model.

``build(name, ...)`` gives a ``Strategy``; the caller drives a round with its
``accumulator()`` and ``server_step(...)`` (see ``fedlib.strategy.base``) and reads its
client side from ``proximal_mu`` (FedProx) and ``keeps_norm_local`` (FedBN, with
``norm_keys``). The server optimizers and robust aggregations follow Flower's
implementations (``flwr.serverapp.strategy``), which tests/test_strategies.py checks.
"""

from __future__ import annotations

from .base import FedProx, ServerOptimizer, Strategy
from .fedavgm import FedAvgM
from .fedbn import FedBN, norm_keys
from .fedopt import FedAdagrad, FedAdam, FedYogi
from .robust import Median, TrimmedMean

NAMES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedbn", "median", "trimmed_mean")
# Flower's defaults (flwr 1.42: FedAvgM server_learning_rate, FedAdam / FedYogi / FedAdagrad eta).
DEFAULT_SERVER_LR = {"fedavgm": 1.0, "fedadam": 0.1, "fedyogi": 0.01, "fedadagrad": 0.1}

# The TrainConfig fields that hold a strategy's settings (build's keyword arguments).
SETTINGS = ("server_lr", "server_momentum", "beta1", "beta2", "tau", "trim_fraction", "proximal_mu")

__all__ = [
    "DEFAULT_SERVER_LR",
    "NAMES",
    "SETTINGS",
    "FedAdagrad",
    "FedAdam",
    "FedAvgM",
    "FedBN",
    "FedProx",
    "FedYogi",
    "Median",
    "ServerOptimizer",
    "Strategy",
    "TrimmedMean",
    "build",
    "from_config",
    "norm_keys",
]


def build(
    name: str,
    *,
    server_lr: float | None = None,
    server_momentum: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
    trim_fraction: float = 0.2,
    proximal_mu: float = 0.01,
) -> Strategy:
    """The strategy ``name`` (one of NAMES). Only the arguments of that strategy are read and
    checked: ``server_lr`` (None: DEFAULT_SERVER_LR; refused where there is no server
    optimizer), ``server_momentum`` (FedAvgM), ``beta1``/``beta2`` (FedAdam, FedYogi),
    ``tau`` (FedAdam, FedYogi, FedAdagrad), ``trim_fraction`` (trimmed_mean), ``proximal_mu`` (FedProx)."""
    if name not in NAMES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(NAMES)}")
    if name not in DEFAULT_SERVER_LR:
        if server_lr is not None:
            raise ValueError(f"strategy {name!r} has no server learning rate; it takes the aggregate as it is")
    else:
        server_lr = DEFAULT_SERVER_LR[name] if server_lr is None else server_lr
        if not server_lr > 0:
            raise ValueError(f"server learning rate must be positive, got {server_lr}")
    if name in ("fedadam", "fedyogi", "fedadagrad") and not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if name in ("fedadam", "fedyogi") and not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"beta1 and beta2 must be in [0, 1), got {beta1} and {beta2}")
    if name == "fedavg":
        return Strategy()
    if name == "fedavgm":
        if not 0 <= server_momentum < 1:
            raise ValueError(f"server momentum must be in [0, 1), got {server_momentum}")
        return FedAvgM(server_lr, server_momentum)
    if name == "fedprox":
        if not proximal_mu >= 0:
            raise ValueError(f"proximal_mu must be >= 0, got {proximal_mu}")
        return FedProx(proximal_mu)
    if name == "fedadam":
        return FedAdam(server_lr, beta1, beta2, tau)
    if name == "fedyogi":
        return FedYogi(server_lr, beta1, beta2, tau)
    if name == "fedadagrad":
        return FedAdagrad(server_lr, tau)
    if name == "fedbn":
        return FedBN()
    if name == "median":
        return Median()
    return TrimmedMean(trim_fraction)


def from_config(cfg) -> Strategy:
    """The strategy a config names (``cfg.strategy``), with its settings from the fields
    ``SETTINGS`` of the same name (``fedlib.config.TrainConfig``; this package does not import it)."""
    return build(cfg.strategy, **{name: getattr(cfg, name) for name in SETTINGS})
