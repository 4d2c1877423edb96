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
from .train import Hardware, balanced_weights, derive_seed, local_train

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


def fit(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    cfg: TrainConfig,
    hw: Hardware,
    round_idx: int,
    client: int,
    attempt: int = 0,
    optimizer_state: dict | None = None,
) -> tuple[Update, dict]:
    """Train ``model`` (holding the global weights) on ``images[indices]`` for E local
    epochs (FedProx: with its proximal term towards those weights); returns the update
    and the optimizer state (kept only on request)."""
    fault = injected_fault(cfg, round_idx, client, attempt)
    if fault == "raise":
        raise InjectedFault(f"injected failure of client {client} in round {round_idx + 1}")
    dp = privacy.settings(cfg, len(indices))
    res = local_train(
        model,
        images,
        labels,
        indices,
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        image_size=cfg.image_size,
        seed=derive_seed(cfg.seed, "train", round_idx, client),
        hw=hw,
        optimizer_state=optimizer_state,
        dp=dp,
        class_weight=class_weights(cfg, labels[indices]),
        proximal_mu=cfg.proximal_mu if cfg.strategy == "fedprox" else 0.0,
    )
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
    return Update(state, res.num_examples, res.loss, metrics), res.optimizer_state
