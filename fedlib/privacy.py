"""Differential privacy for what a client sends: DP-SGD with Opacus, and its accounting.

Each client clips every per-sample gradient to ``dp_max_grad_norm`` and adds
Gaussian noise of ``dp_noise_multiplier`` times that norm to each batch's sum
(Opacus' ``GradSampleModule`` + ``DPOptimizer``), so the model it hands back is
(epsilon, delta)-DP with respect to its own images. The models use GroupNorm
instead of BatchNorm then (``build_model(norm="group")``).

Accounting uses Opacus' RDP accountant with sampling rate q = B / n for each of
a client's steps, composed over every local update it has made so far. That is
the usual approximation for shuffled fixed-size batches: the accountant's
analysis assumes Poisson sampling (docs/protocol.md, deviations).

With ``dp_target_epsilon`` each client picks the smallest noise for which taking
part in all R rounds spends at most the target.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass

from .config import TrainConfig


@dataclass(frozen=True)
class DPSettings:
    noise_multiplier: float  # sigma: noise std / clipping norm
    max_grad_norm: float  # C: per-sample gradient clipping norm
    sample_rate: float  # q = B / n


def steps_per_update(num_examples: int, cfg: TrainConfig) -> int:
    """Optimizer steps of one local update (``train.batches`` drops a last batch of one)."""
    per_epoch = math.ceil(num_examples / cfg.batch_size)
    if num_examples > cfg.batch_size and num_examples % cfg.batch_size == 1:
        per_epoch -= 1
    return cfg.local_epochs * per_epoch


def settings(cfg: TrainConfig, num_examples: int) -> DPSettings | None:
    """The DP-SGD settings of a client holding ``num_examples`` images (None: no DP)."""
    if not cfg.dp:
        return None
    q = min(cfg.batch_size / num_examples, 1.0)
    sigma = cfg.dp_noise_multiplier
    if sigma is None:
        sigma = _noise_for(cfg.dp_target_epsilon, cfg.dp_delta, q, cfg.rounds * steps_per_update(num_examples, cfg))
    return DPSettings(float(sigma), cfg.dp_max_grad_norm, q)


@functools.lru_cache(maxsize=64)
def _noise_for(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """Opacus' search for sigma takes seconds; a client asks again every round."""
    from opacus.accountants.utils import get_noise_multiplier

    with _quiet_accountant():
        return get_noise_multiplier(
            target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps, accountant="rdp"
        )


@contextlib.contextmanager
def _quiet_accountant():
    """Opacus warns when the best RDP order is its largest: the epsilon is then a valid
    but looser (larger) bound. Conservative is fine here; the warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


def epsilon(dp: DPSettings, steps: int, delta: float) -> float:
    """Epsilon spent after ``steps`` DP-SGD steps at (sigma, q), for this delta."""
    if steps <= 0:
        return 0.0
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(dp.noise_multiplier, dp.sample_rate, steps)]
    with _quiet_accountant():
        return float(accountant.get_epsilon(delta))


class Accountant:
    """A federated run's DP bookkeeping, for the server: each client's DP-SGD steps so far and
    the epsilon they have spent (checkpointed as ``dp_steps`` and ``dp_epsilon``). Without DP
    it records nothing and adds nothing to the history or final.json."""

    def __init__(self, cfg: TrainConfig, checkpoint: dict | None = None):
        self.cfg = cfg
        checkpoint = checkpoint or {}
        self.steps: dict[int, int] = checkpoint.get("dp_steps", {})
        self.spent: dict[int, float] = checkpoint.get("dp_epsilon", {})

    def account(self, updates: list, rows: list[dict]) -> None:
        """Add a round's DP-SGD steps to each client's total (``updates``: (client, Update) with
        its DP metrics) and its epsilon spent so far to its clients.csv row."""
        if not self.cfg.dp:
            return
        for c, u in updates:
            self.steps[c] = self.steps.get(c, 0) + int(u.metrics["dp_steps"])
            dp = DPSettings(u.metrics["dp_noise_multiplier"], self.cfg.dp_max_grad_norm, u.metrics["dp_sample_rate"])
            self.spent[c] = epsilon(dp, self.steps[c], self.cfg.dp_delta)
        for row in rows:
            if row["status"] == "used" and row["client"] in self.spent:
                row["epsilon"] = self.spent[row["client"]]

    def row(self) -> dict:
        """The history row's privacy column: the largest epsilon any client has spent."""
        return {"epsilon_max": max(self.spent.values(), default=0.0)} if self.cfg.dp else {}

    def state(self) -> dict:
        return {"dp_steps": self.steps, "dp_epsilon": self.spent}

    def final(self) -> dict:
        """final.json's ``privacy`` entry (with DP)."""
        if not self.cfg.dp:
            return {}
        return {
            "privacy": {
                "delta": self.cfg.dp_delta,
                "epsilon_per_client": {str(c): e for c, e in sorted(self.spent.items())},
                "epsilon_max": max(self.spent.values(), default=0.0),
            }
        }
