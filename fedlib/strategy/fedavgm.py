"""FedAvgM (Hsu et al., 2019): server SGD with momentum on the pseudo-gradient, as Flower's FedAvgM.

The pseudo-gradient is ``global - aggregate``. Momentum follows PyTorch's SGD convention,
as Flower does: the buffer starts as the first pseudo-gradient (no dampening) and then
``buf = momentum * buf + pseudo_gradient``; the step is ``global - lr * buf``.
"""

from __future__ import annotations

import torch

from .base import ServerOptimizer, register


@register
class FedAvgM(ServerOptimizer):
    """FedAvg with server momentum; with momentum 0 and lr 1 it is FedAvg exactly."""

    name = "fedavgm"
    settings = {"server_lr": 1.0, "server_momentum": 0.9}  # Flower's defaults
    slots = ("momentum",)

    def __init__(self, server_lr: float, server_momentum: float) -> None:
        super().__init__()
        if not 0 <= server_momentum < 1:
            raise ValueError(f"server momentum must be in [0, 1), got {server_momentum}")
        self.server_lr = float(server_lr)
        self.server_momentum = float(server_momentum)

    def server_step(self, global_state, aggregate, round_idx):
        if self.server_momentum == 0.0 and self.server_lr == 1.0:
            return dict(aggregate)  # Flower skips the server optimizer here too
        return super().server_step(global_state, aggregate, round_idx)

    def step(self, key: str, x: torch.Tensor, delta: torch.Tensor, round_idx: int) -> torch.Tensor:
        grad = -delta
        if self.server_momentum > 0.0:
            buf = self.state["momentum"].get(key)
            grad = grad if buf is None else self.server_momentum * buf + grad
            self.state["momentum"][key] = grad
        return x - self.server_lr * grad

    def __repr__(self) -> str:
        return f"FedAvgM(server_lr={self.server_lr}, server_momentum={self.server_momentum})"
