"""The Strategy base class (FedAvg), the registry, and the server-optimizer base the FedAvgM and
FedOpt families share.

A strategy is one class in one module, registered with ``@register``: its ``name``, the
``TrainConfig`` fields it reads (``settings``, with their defaults), its capabilities
(``needs_each_update``, ``supports_dp``, ``personal``), its client side (``client_hook``: a
``fedlib.train.LocalHook`` for each local update, from what ``client_start`` sent that client)
and its server side.

A round on the server goes: ``client_start(global_state, c)`` for each sampled client c (its
starting weights and any extra tensors), then for each usable update
``acc.add(shared(update.state), weight)`` into ``acc = accumulator()`` and ``kept(update)``
for what the server keeps of it per client; then ``next_state(global_state, acc.result(),
kept, round_idx)`` gives the next global model (by ``server_step`` on the trainable
parameters) and stores the kept entries in ``local_states``. Strategies that keep state
between rounds hand it out with ``state_dict`` (server side) and ``local_states`` (per client)
and take it back with ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..aggregate import RunningAverage
from ..train import LocalHook

# name -> class, in registration order (the order of fedlib.strategy.NAMES)
REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` buildable by its ``name`` (``fedlib.strategy.build``)."""
    if cls.name in REGISTRY:
        raise ValueError(f"strategy {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


@register
class Strategy:
    """FedAvg (McMahan et al.): the next global model is the weighted mean of the updates.

    Subclasses change what differs: the accumulator (robust aggregation), the server step
    (server optimizers), the client side (``client_hook``: FedProx, SCAFFOLD) or what stays
    with each client (``client_start``, ``shared``, ``kept``: FedBN, SCAFFOLD).
    """

    name = "fedavg"
    settings: dict[str, object] = {}  # the TrainConfig fields it reads, with build's defaults
    flower = True  # follows Flower's strategy of that name (tests/test_strategies.py compares them)
    # Capabilities, read by the config check (``fedlib.strategy.check``) and the server.
    needs_each_update = False  # the server must see each update (or each client's own layers): no --secagg
    supports_dp = True  # False: DP-SGD would undo its client side (``dp_conflict`` says how)
    dp_conflict = ""
    personal = False  # each client has its own model (FedBN): evaluated client by client
    proximal_mu = 0.0  # the client's proximal term (FedProx); 0 is plain local training
    keeps_norm_local = False  # FedBN: normalization layers stay at each client

    def __init__(self) -> None:
        # What the server keeps for each client between rounds (FedBN: its normalization
        # layers; SCAFFOLD: its control variate), checkpointed by the server.
        self.local_states: dict[int, dict] = {}
        self.param_keys: set[str] = set()
        self.num_clients = 0

    @classmethod
    def from_settings(cls, given: Mapping) -> Strategy:
        """The strategy with ``settings`` taken from ``given`` (None or missing: the default),
        checked; entries of other strategies are not read. A server learning rate given to a
        strategy without one is refused."""
        if "server_lr" not in cls.settings and given.get("server_lr") is not None:
            raise ValueError(f"strategy {cls.name!r} has no server learning rate; it takes the aggregate as it is")
        values = {k: default if given.get(k) is None else given[k] for k, default in cls.settings.items()}
        if "server_lr" in values and not values["server_lr"] > 0:
            raise ValueError(f"server learning rate must be positive, got {values['server_lr']}")
        if "tau" in values and not values["tau"] > 0:
            raise ValueError(f"tau must be positive, got {values['tau']}")
        if "beta2" in values and not (0 <= values["beta1"] < 1 and 0 <= values["beta2"] < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {values['beta1']} and {values['beta2']}")
        return cls(**values)

    # ---- the client side --------------------------------------------------------------------

    def client_hook(self, extra: Mapping[str, torch.Tensor] | None) -> LocalHook | None:
        """The strategy's part in one local update (``fedlib.train.LocalHook``), built at the
        client from the extra tensors ``client_start`` sent it; None: plain local training."""
        return None

    # ---- the server side --------------------------------------------------------------------

    def setup(self, model: nn.Module, num_clients: int) -> None:
        """Called once by the server with its model and the number of clients."""
        self.param_keys = {name for name, _ in model.named_parameters()}
        self.num_clients = num_clients

    def client_start(self, global_state: dict, client: int) -> tuple[dict, dict | None]:
        """What ``client`` starts a round from: model weights (the global ones) and extra
        tensors for its ``client_hook`` (None)."""
        return global_state, None

    def shared(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The entries of an update that are aggregated (all of them)."""
        return state

    def check_update(self, update) -> str | None:
        """Why a client's update is unusable for this strategy beyond the model's own checks, or None."""
        return None

    def kept(self, update) -> dict | None:
        """What the server keeps of a usable update for its client (nothing)."""
        return None

    def client_model_state(self, global_state: dict, client: int) -> dict:
        """The weights ``client`` evaluates with (``personal`` strategies): its starting ones."""
        return self.client_start(global_state, client)[0]

    def next_state(self, global_state: dict, aggregate: dict, kept: dict[int, dict], round_idx: int) -> dict:
        """The next global model after a round, and each client's ``kept`` entries stored.

        The server's step moves trainable parameters only; buffers (BatchNorm's running
        statistics) take the aggregate: Adam-like sign steps drive a running variance negative."""
        stepped = [k for k in aggregate if k in self.param_keys]
        step = self.server_step({k: global_state[k] for k in stepped}, {k: aggregate[k] for k in stepped}, round_idx)
        self.local_states.update(kept)
        return {**global_state, **aggregate, **step}

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


class ServerOptimizer(Strategy):
    """A server step on the pseudo-gradient, one state-dict entry at a time.

    Floating-point entries are stepped in float64 and cast back to the global entry's
    dtype; integer buffers (BatchNorm's ``num_batches_tracked``) take the aggregate.
    The optimizer state (float64 CPU tensors) is one dict per slot, keyed like the model.
    """

    slots: tuple[str, ...] = ()  # names of the per-entry state, e.g. ("momentum",)

    def __init__(self) -> None:
        super().__init__()
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
