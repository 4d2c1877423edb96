"""What runs at a hospital: one local update of the global model on the site's own images.

``fit`` is the whole client side of FedAvg, shared by the in-process engine
(``fedlib.federated``) and Flower's ClientApp (``fedlib.flower``), so every
engine trains with the same code and the same seeds. What it hands back is an
``Update``: parameter tensors, a sample count and scalar metrics, nothing else
(no images, no file names, no patient ids).

``inject_failures`` (a probability) makes a client fail on purpose, drawn from
(seed, round, client, attempt) so that a test or a demo fails the same way every
time: it raises, returns non-finite weights, or returns a wrongly shaped tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import privacy
from .config import TrainConfig
from .strategy import from_config
from .train import Hardware, LocalSpec, balanced_weights, derive_seed, local_train

FAULT_KINDS = ("raise", "nan", "shape")


class InjectedFault(RuntimeError):
    """A failure asked for with ``inject_failures``."""


@dataclass
class Update:
    """What a client hands back after one local update."""

    state: dict[str, torch.Tensor]  # the full state dict, on the CPU
    num_examples: int  # images the client trained on (the FedAvg weight)
    loss: float  # mean training loss of the local update
    metrics: dict[str, float] = field(default_factory=dict)  # further scalars (e.g. DP epsilon)


@dataclass
class ExtendedUpdate(Update):
    """An update with what the strategy's client side adds (SCAFFOLD: the change of the
    client's control variate); a plain ``Update`` when it adds nothing."""

    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """Which local update a client is asked for, besides the weights it starts from."""

    round_idx: int
    client: int
    attempt: int = 0
    optimizer_state: dict | None = None  # its Adam state from its last update (--keep-optimizer-state)
    extra: dict | None = None  # what the strategy sends it with the weights (SCAFFOLD: control variates)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def injected_fault(cfg: TrainConfig, round_idx: int, client: int, attempt: int = 0) -> str | None:
    """The fault this client is told to have in this round, or None."""
    if cfg.inject_failures <= 0:
        return None
    rng = np.random.default_rng(derive_seed(cfg.seed, "fault", round_idx, client, attempt))
    if rng.random() >= cfg.inject_failures:
        return None
    return FAULT_KINDS[int(rng.integers(len(FAULT_KINDS)))]


def class_weights(cfg: TrainConfig, labels: np.ndarray, num_classes: int = 3) -> np.ndarray | None:
    """The loss weights a site uses, from its own label counts only (nothing is shared)."""
    return balanced_weights(labels, num_classes) if cfg.class_weight == "balanced" else None


def local_spec(cfg: TrainConfig, hw: Hardware, seed: int, class_weight: np.ndarray | None, **changes) -> LocalSpec:
    """The settings of one local update from the run's config: E local epochs (``changes``
    may set others, e.g. the pooled baselines' one epoch, or the DP settings and the hook)."""
    values = dict(
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        image_size=cfg.image_size,
        seed=seed,
        hw=hw,
        class_weight=class_weight,
    )
    return LocalSpec(**{**values, **changes})


def _outputs(model: nn.Module) -> int:
    """The model's class count: the outputs of its last linear layer, the head of every model here."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def fit(model: nn.Module, data: tuple, cfg: TrainConfig, hw: Hardware, task: Task) -> tuple[Update, dict]:
    """Train ``model`` (holding the global weights) on ``data`` = (images, labels, indices),
    i.e. on ``images[indices]``, for E local epochs, with the strategy's client side
    (``client_hook``: FedProx's proximal term towards those weights, SCAFFOLD's correction);
    returns the update and the optimizer state (kept only on request)."""
    images, labels, indices = data
    round_idx, client = task.round_idx, task.client
    fault = injected_fault(cfg, round_idx, client, task.attempt)
    if fault == "raise":
        raise InjectedFault(f"injected failure of client {client} in round {round_idx + 1}")
    dp = privacy.settings(cfg, len(indices))
    seed = derive_seed(cfg.seed, "train", round_idx, client)
    hook = from_config(cfg).client_hook(task.extra)
    weights = class_weights(cfg, labels[indices], _outputs(model))
    spec = local_spec(cfg, hw, seed, weights, dp=dp, hook=hook)
    res = local_train(model, images, labels, indices, spec, task.optimizer_state)
    metrics = (
        {}
        if dp is None
        else {
            "dp_steps": float(privacy.steps_per_update(len(indices), cfg)),
            "dp_noise_multiplier": dp.noise_multiplier,
            "dp_sample_rate": dp.sample_rate,
        }
    )
    state = cpu_state(model)
    if fault is not None:
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] = torch.full_like(state[key], float("nan")) if fault == "nan" else state[key][..., :-1]
    if res.extra:
        return ExtendedUpdate(state, res.num_examples, res.loss, metrics, res.extra), res.optimizer_state
    return Update(state, res.num_examples, res.loss, metrics), res.optimizer_state
