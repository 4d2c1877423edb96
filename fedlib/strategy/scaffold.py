"""SCAFFOLD (Karimireddy et al., 2020): control variates correct each client's drift.

The server holds a control variate ``c`` and, for each client, that client's ``c_i`` (all
zero at the start), one tensor per trainable parameter. Each round:

- the server sends a sampled client the global weights ``x``, ``c`` and its own ``c_i``
  (``client_start``; so the client keeps nothing between rounds, which is what works with
  stock Flower: a SuperNode's ClientApp may be restarted, and the server can rebuild every
  ``c_i`` from the changes it receives anyway);
- the client trains from ``x`` for K optimizer steps, adding ``c - c_i`` to every
  parameter's gradient after each backward pass, before the step (``ControlVariates``);
- option II of the paper: ``c_i+ = c_i - c + (x - y_i) / (K * lr)``, with ``y_i`` its
  trained weights and ``lr`` the local learning rate; it returns ``y_i`` (as any client) and
  ``delta c_i = c_i+ - c_i`` (``Update.extra``);
- the server: ``x <- x + server_lr * mean(y_i - x)`` over the round's updates (the run's
  ``--aggregation`` weights the mean, as for FedAvg; with ``uniform`` it is the paper's plain
  mean; server_lr 1, the default, takes the mean itself), ``c <- c + (|S| / N) * mean(delta c_i)``
  over the |S| clients of the round and the N of the run (the paper's plain mean), and
  ``c_i <- c_i + delta c_i`` for each of them. ``c`` is the server's state and the ``c_i`` are
  ``local_states``: both are checkpointed, so a resumed run continues exactly.

The paper's local optimizer is plain SGD with step size ``lr``, for which ``(x - y_i) / (K * lr)``
is the mean gradient the client followed. Here the local optimizer is Adam (the project's
setting): the correction is added to the gradient Adam receives, and option II still divides
the displacement by ``K * lr``, so ``c_i`` is Adam's mean step per unit learning rate rather than
a mean gradient. It is what SCAFFOLD computes when Adam replaces SGD, not the paper's analysed
algorithm. DP-SGD is refused: Opacus rebuilds each gradient from the per-sample ones in its
step and would drop the correction. --secagg is refused: the server needs each ``delta c_i``.
Buffers (BatchNorm's running statistics) are averaged as in FedAvg and have no control variate.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..train import LocalHook
from .base import ServerOptimizer, register

C, CI = "c.", "ci."  # prefixes of the global and the client's control variate in what the server sends
ZERO = torch.zeros((), dtype=torch.float64)  # a control variate before its first change


class ControlVariates(LocalHook):
    """The client side of one local update: the gradient correction, then option II's change of ``c_i``."""

    supports_dp = False
    dp_refusal = "SCAFFOLD's gradient correction cannot be combined with DP-SGD: Opacus would drop it"

    def __init__(self, c: Mapping[str, torch.Tensor], ci: Mapping[str, torch.Tensor]) -> None:
        self.c, self.ci = c, ci
        self.correction: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.start_weights: dict[str, torch.Tensor] = {}
        self.lr, self.steps = 0.0, 0

    def start(self, model, spec) -> None:
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        self.start_weights = {k: p.detach().to("cpu", torch.float64, copy=True) for k, p in named}
        self.correction = [(p, (self.c[k] - self.ci[k]).to(p.device, p.dtype)) for k, p in named]
        self.lr, self.steps = spec.lr, 0

    def before_step(self) -> None:
        for p, correction in self.correction:
            if p.grad is not None:
                p.grad.add_(correction)
        self.steps += 1

    def finish(self, model) -> dict[str, torch.Tensor]:
        """``delta c_i = c_i+ - c_i = (x - y_i) / (K * lr) - c`` (float64, CPU), keyed by parameter."""
        if not self.steps:
            return {k: torch.zeros_like(x) for k, x in self.start_weights.items()}
        params = dict(model.named_parameters())
        scale = 1.0 / (self.steps * self.lr)
        return {
            k: (x - params[k].detach().to("cpu", torch.float64)) * scale - self.c[k].to(torch.float64)
            for k, x in self.start_weights.items()
        }


@register
class Scaffold(ServerOptimizer):
    """SCAFFOLD, option II (see the module docstring)."""

    name = "scaffold"
    settings = {"server_lr": 1.0}  # the global step size (the paper's eta_g)
    flower = False  # Flower has no SCAFFOLD
    slots = ("control",)  # the server's c, float64, keyed by parameter
    needs_each_update = True
    supports_dp = False
    dp_conflict = "DP-SGD would drop SCAFFOLD's gradient correction"

    def __init__(self, server_lr: float) -> None:
        super().__init__()
        self.server_lr = float(server_lr)

    # ---- client --------------------------------------------------------------------------

    def client_hook(self, extra) -> ControlVariates:
        if not extra:
            raise ValueError("SCAFFOLD's client needs the control variates the server sends with the weights")
        c = {k[len(C) :]: v for k, v in extra.items() if k.startswith(C)}
        ci = {k[len(CI) :]: v for k, v in extra.items() if k.startswith(CI)}
        return ControlVariates(c, ci)

    # ---- server --------------------------------------------------------------------------

    def control(self, key: str) -> torch.Tensor:
        return self.state["control"].get(key, ZERO)

    def client_start(self, global_state: dict, client: int) -> tuple[dict, dict]:
        own = self.local_states.get(client, {})
        extra = {}
        for k in sorted(self.param_keys):
            like = global_state[k]
            extra[C + k] = torch.zeros_like(like) + self.control(k).to(like.dtype)
            extra[CI + k] = torch.zeros_like(like) + own.get(k, ZERO).to(like.dtype)
        return global_state, extra

    def check_update(self, update) -> str | None:
        extra = getattr(update, "extra", None) or {}
        if set(extra) != self.param_keys:
            return "no control-variate change for every parameter (SCAFFOLD)"
        if not all(bool(torch.isfinite(v).all()) for v in extra.values()):
            return "control-variate change holds non-finite values"
        return None

    def kept(self, update) -> dict:
        return {k: v.to(torch.float64) for k, v in update.extra.items()}

    def next_state(self, global_state, aggregate, kept, round_idx):
        new = super().next_state(global_state, aggregate, {}, round_idx)
        if kept:
            for k in self.param_keys:
                mean = sum(delta[k] for delta in kept.values()) / len(kept)
                self.state["control"][k] = self.control(k) + len(kept) / self.num_clients * mean
            for c, delta in kept.items():
                own = self.local_states.setdefault(c, {})
                for k, d in delta.items():
                    own[k] = own.get(k, ZERO) + d
        return new

    def server_step(self, global_state, aggregate, round_idx):
        if self.server_lr == 1.0:
            return dict(aggregate)  # x + (mean(y) - x) is the mean itself
        return super().server_step(global_state, aggregate, round_idx)

    def step(self, key: str, x: torch.Tensor, delta: torch.Tensor, round_idx: int) -> torch.Tensor:
        return x + self.server_lr * delta

    def __repr__(self) -> str:
        return f"Scaffold(server_lr={self.server_lr})"
