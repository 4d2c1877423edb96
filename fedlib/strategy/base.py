"""The Strategy base class (FedAvg) and the server-optimizer base the FedAvgM and FedOpt families share.

A round goes: ``acc = strategy.accumulator()``, ``acc.add(state, num_examples)`` for each
client update, then ``strategy.server_step(global_state, acc.result(), round_idx)`` gives
the next global model. Strategies that keep optimizer state between rounds (momentum,
moments) hand it out with ``state_dict`` and take it back with ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..aggregate import RunningAverage


class Strategy:
    """FedAvg (McMahan et al.): the next global model is the weighted mean of the updates.

    Subclasses change what differs: the accumulator (robust aggregation), the server step
    (server optimizers) or the client side (``proximal_mu`` for FedProx,
    ``keeps_norm_local`` for FedBN).
    """

    name = "fedavg"
    proximal_mu = 0.0  # the client's proximal term (FedProx); 0 is plain local training
    keeps_norm_local = False  # FedBN: normalization layers stay at each client

    def accumulator(self):
        """Collects one round's updates with ``add(state, weight)``; ``result()`` is the aggregate."""
        return RunningAverage()

    def min_updates(self) -> int:
        """The fewest updates a round needs for this aggregation to mean something."""
        return 1

    def check_clients_per_round(self, per_round: int) -> str | None:
        """Why ``per_round`` clients a round make this strategy meaningless, or None."""
        return None

    def server_step(
        self, global_state: Mapping[str, torch.Tensor], aggregate: Mapping[str, torch.Tensor], round_idx: int
    ) -> dict[str, torch.Tensor]:
        """The next global model (``round_idx`` counts from 0) over the aggregate's keys, which must
        all be in ``global_state`` (entries the caller left out, e.g. FedBN's, are its own to keep).
        FedAvg takes the aggregate."""
        return dict(aggregate)

    def state_dict(self) -> dict:
        """Server optimizer state, for checkpoints (none for FedAvg)."""
        return {"strategy": self.name}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what ``state_dict`` gave; a checkpoint of another strategy is refused."""
        if state.get("strategy") != self.name:
            raise ValueError(f"server state of strategy {state.get('strategy')!r} cannot resume {self.name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FedProx(Strategy):
    """FedProx (Li et al., 2020): FedAvg on the server; each client adds mu/2 ||w - w_global||^2 to its loss."""

    name = "fedprox"

    def __init__(self, proximal_mu: float) -> None:
        self.proximal_mu = float(proximal_mu)

    def __repr__(self) -> str:
        return f"FedProx(proximal_mu={self.proximal_mu})"


class ServerOptimizer(Strategy):
    """A server step on the pseudo-gradient, one state-dict entry at a time.

    Floating-point entries are stepped in float64 and cast back to the global entry's
    dtype; integer buffers (BatchNorm's ``num_batches_tracked``) take the aggregate.
    The optimizer state (float64 CPU tensors) is one dict per slot, keyed like the model.
    """

    slots: tuple[str, ...] = ()  # names of the per-entry state, e.g. ("momentum",)

    def __init__(self) -> None:
        self.state: dict[str, dict[str, torch.Tensor]] = {slot: {} for slot in self.slots}

    def server_step(self, global_state, aggregate, round_idx):
        out = {}
        for key, agg in aggregate.items():
            if key not in global_state:
                raise ValueError(f"aggregate entry {key!r} is not in the global model")
            current = global_state[key]
            if current.shape != agg.shape:
                raise ValueError(f"{key!r}: aggregate shape {tuple(agg.shape)} but global {tuple(current.shape)}")
            if not current.dtype.is_floating_point:
                out[key] = agg
                continue
            x = current.detach().to("cpu", torch.float64)
            delta = agg.detach().to("cpu", torch.float64) - x  # the update direction: minus the pseudo-gradient
            out[key] = self.step(key, x, delta, round_idx).to(device=agg.device, dtype=current.dtype)
        return out

    def step(self, key: str, x: torch.Tensor, delta: torch.Tensor, round_idx: int) -> torch.Tensor:
        """The new value of entry ``key`` (float64) from its value ``x`` and ``delta = aggregate - x``."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {
            "strategy": self.name,
            **{slot: {k: v.clone() for k, v in self.state[slot].items()} for slot in self.slots},
        }

    def load_state_dict(self, state: Mapping) -> None:
        super().load_state_dict(state)
        self.state = {
            slot: {k: v.detach().to("cpu", torch.float64, copy=True) for k, v in state[slot].items()}
            for slot in self.slots
        }
