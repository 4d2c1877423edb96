"""Federated strategies: how a round's client updates become the next global model.

Each strategy is one class in one module of this package, registered by name with
``@register`` (``fedlib.strategy.base``); ``build(name, ...)`` gives one, ``NAMES`` lists
them in registration order and ``check(cfg)`` says why a config's strategy cannot run.
A strategy declares its settings, its capabilities, its client side (``client_hook``) and
its server side (see ``fedlib.strategy.base``); nothing outside this package asks which
strategy it is. Adding one: a module with a ``@register`` class, imported below.

The server optimizers and robust aggregations follow Flower's
implementations (``flwr.serverapp.strategy``), which tests/test_strategies.py checks.
"""

from __future__ import annotations

# Importing a module registers its strategies; this order is NAMES' order (the CLI's and the docs').
# isort: off
from . import base, fedavgm, fedprox, fedopt, fedbn, robust, scaffold  # noqa: F401

# isort: on
from .base import REGISTRY, ServerOptimizer, Strategy, register
from .fedavgm import FedAvgM
from .fedbn import FedBN, norm_keys
from .fedopt import FedAdagrad, FedAdam, FedYogi
from .fedprox import FedProx, proximal_term
from .robust import Median, TrimmedMean
from .scaffold import Scaffold

NAMES = tuple(REGISTRY)  # in registration order: base, fedavgm, fedprox, fedopt, fedbn, robust, scaffold
# Flower's defaults (flwr 1.42: FedAvgM server_learning_rate, FedAdam / FedYogi / FedAdagrad eta).
DEFAULT_SERVER_LR = {n: c.settings["server_lr"] for n, c in REGISTRY.items() if c.flower and "server_lr" in c.settings}

# The TrainConfig fields that hold a strategy's settings (build's keyword arguments), each once.
SETTINGS = tuple(dict.fromkeys(k for c in REGISTRY.values() for k in c.settings))

__all__ = [
    "DEFAULT_SERVER_LR",
    "NAMES",
    "REGISTRY",
    "SETTINGS",
    "FedAdagrad",
    "FedAdam",
    "FedAvgM",
    "FedBN",
    "FedProx",
    "FedYogi",
    "Median",
    "Scaffold",
    "ServerOptimizer",
    "Strategy",
    "TrimmedMean",
    "build",
    "check",
    "from_config",
    "norm_keys",
    "proximal_term",
    "register",
]


def build(name: str, **settings) -> Strategy:
    """The strategy ``name`` (one of NAMES) with its ``settings`` (TrainConfig field names;
    missing or None: the strategy's default). Only the settings of that strategy are read and
    checked; a ``server_lr`` is refused where there is no server optimizer."""
    if name not in REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(NAMES)}")
    return REGISTRY[name].from_settings(settings)


def from_config(cfg) -> Strategy:
    """The strategy a config names (``cfg.strategy``), with its settings from the fields
    ``SETTINGS`` of the same name (``fedlib.config.TrainConfig``; this package does not import it)."""
    return build(cfg.strategy, **{name: getattr(cfg, name) for name in SETTINGS})


def check(cfg) -> None:
    """Why ``cfg``'s strategy cannot run as configured, as a ValueError whose text is the
    user's error message (``fedlib.config`` turns it into a UserError); None when it can."""
    s = cfg.strategy
    if s not in REGISTRY:
        raise ValueError(f"unknown strategy {s!r}; choose one of {', '.join(NAMES)}.")
    if not (s == Strategy.name or cfg.mode == "fedavg"):
        raise ValueError(
            f"--strategy {s} is a federated strategy; it needs --mode fedavg (federated rounds), not {cfg.mode}."
        )
    try:
        strategy = from_config(cfg)
    except ValueError as exc:
        raise ValueError(f"--strategy {s}: {exc}; change that option (docs/strategies-and-study.md).") from None
    if cfg.mode != "fedavg":
        return
    if cfg.secagg and strategy.needs_each_update:
        raise ValueError(
            f"--secagg shows the server only the sum of a round's updates; --strategy {s} needs each update "
            "(or each hospital's own layers): use one of them."
        )
    if cfg.dp and not strategy.supports_dp:
        raise ValueError(
            f"--strategy {s} with differential privacy is not supported: {strategy.dp_conflict}; use one of them."
        )
    why = strategy.check_clients_per_round(min(cfg.clients_per_round, cfg.clients))
    if why is not None:
        raise ValueError(f"--strategy {s}: {why}.")
