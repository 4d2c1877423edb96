"""FedProx (Li et al., 2020): FedAvg on the server; each client adds mu/2 ||w - w_global||^2 to its loss."""

from __future__ import annotations

from functools import partial

import torch

from ..train import LocalHook
from .base import Strategy, register


def proximal_term(params: list[torch.Tensor], anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's ``mu/2 * sum ||w - w_global||^2`` over ``params`` and their detached copies ``anchor``;
    its gradient is ``mu * (w - w_global)``, zero at the start of local training."""
    return mu / 2 * sum((p - a).pow(2).sum() for p, a in zip(params, anchor, strict=True))


class Proximal(LocalHook):
    """The client side: each batch's loss gains ``proximal_term`` towards the weights the model
    holds when the local update starts (the global model). Opacus would drop that term's
    gradient, so DP-SGD is refused."""

    supports_dp = False
    dp_refusal = "FedProx's proximal term cannot be combined with DP-SGD: Opacus would drop its gradient"

    def __init__(self, mu: float) -> None:
        if not mu >= 0:
            raise ValueError(f"proximal_mu must be >= 0, got {mu}")
        self.mu = float(mu)
        self.term = None

    def start(self, model, spec) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        anchor = [p.detach().clone() for p in params]  # the global weights, outside the graph
        self.term = partial(proximal_term, params, anchor, self.mu)

    def loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss + self.term()


@register
class FedProx(Strategy):
    """FedProx: FedAvg's server; the clients train with ``Proximal`` (mu 0: plain training)."""

    name = "fedprox"
    settings = {"proximal_mu": 0.01}
    supports_dp = False
    dp_conflict = "DP-SGD would drop the proximal term's gradient"

    def __init__(self, proximal_mu: float) -> None:
        super().__init__()
        if not proximal_mu >= 0:
            raise ValueError(f"proximal_mu must be >= 0, got {proximal_mu}")
        self.proximal_mu = float(proximal_mu)

    def client_hook(self, extra) -> Proximal | None:
        return Proximal(self.proximal_mu) if self.proximal_mu > 0 else None

    def __repr__(self) -> str:
        return f"FedProx(proximal_mu={self.proximal_mu})"
