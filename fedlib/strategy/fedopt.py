"""Adaptive server optimizers (Reddi et al., 2021): FedAdagrad, FedAdam, FedYogi, as Flower implements them.

With ``delta = aggregate - global`` (the negative pseudo-gradient), every round:

    m = beta1 * m + (1 - beta1) * delta                      (m starts at 0; FedAdagrad: beta1 = 0, m = delta)
    v = v + delta^2                                          FedAdagrad
    v = beta2 * v + (1 - beta2) * delta^2                    FedAdam
    v = v - (1 - beta2) * delta^2 * sign(v - delta^2)        FedYogi
    global = global + lr_t * m / (sqrt(v) + tau)

v starts at 0 (not at tau^2 as in the paper). lr_t is the server learning rate, except for
FedAdam, which Flower bias-corrects as Adam's alpha_t with t = server_round + 1, where
Flower's server_round counts from 1: with our 0-based ``round_idx``,
``lr_t = lr * sqrt(1 - beta2^(round_idx + 2)) / (1 - beta1^(round_idx + 2))``. The
correction follows the round number, not the count of steps taken.
"""

from __future__ import annotations

import torch

from .base import ServerOptimizer, register


class FedOpt(ServerOptimizer):
    """The shared first moment and step; subclasses give the second moment ``v`` and the step size."""

    slots = ("m", "v")

    def __init__(self, server_lr: float, beta1: float, beta2: float, tau: float) -> None:
        super().__init__()
        self.server_lr = float(server_lr)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.tau = float(tau)

    def step(self, key: str, x: torch.Tensor, delta: torch.Tensor, round_idx: int) -> torch.Tensor:
        m = self.state["m"].get(key, torch.zeros_like(delta))
        v = self.state["v"].get(key, torch.zeros_like(delta))
        m = self.beta1 * m + (1 - self.beta1) * delta
        v = self.second_moment(v, delta)
        self.state["m"][key], self.state["v"][key] = m, v
        return x + self.step_size(round_idx) * m / (v.sqrt() + self.tau)

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step_size(self, round_idx: int) -> float:
        return self.server_lr

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(server_lr={self.server_lr}, beta1={self.beta1}, beta2={self.beta2}, tau={self.tau})"
        )


@register
class FedAdam(FedOpt):
    """Adam on the server, bias-corrected in the step size as Flower does (see the module docstring)."""

    name = "fedadam"
    settings = {"server_lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}

    def second_moment(self, v, delta):
        return self.beta2 * v + (1 - self.beta2) * delta**2

    def step_size(self, round_idx: int) -> float:
        t = round_idx + 2  # Flower's server_round (from 1) + 1
        return self.server_lr * (1 - self.beta2**t) ** 0.5 / (1 - self.beta1**t)


@register
class FedYogi(FedOpt):
    """Yogi on the server: v moves towards delta^2 by an additive, sign-controlled step."""

    name = "fedyogi"
    settings = {"server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}

    def second_moment(self, v, delta):
        sq = delta**2
        return v - (1 - self.beta2) * sq * torch.sign(v - sq)


@register
class FedAdagrad(FedOpt):
    """Adagrad on the server: v sums the squared updates; no first-moment averaging (beta1 = 0)."""

    name = "fedadagrad"
    settings = {"server_lr": 0.1, "tau": 1e-3}

    def __init__(self, server_lr: float, tau: float) -> None:
        super().__init__(server_lr, beta1=0.0, beta2=0.0, tau=tau)

    def second_moment(self, v, delta):
        return v + delta**2

    def __repr__(self) -> str:
        return f"FedAdagrad(server_lr={self.server_lr}, tau={self.tau})"
