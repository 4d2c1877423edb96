"""FedBN (Li et al., 2021): normalization layers stay at each client; the rest is averaged as FedAvg.

The server side is FedAvg's over every entry but ``norm_keys(model)``. The server keeps each
client's normalization entries (``local_states``, checkpointed so that a run resumes exactly),
sends each client its own with the shared weights, and never averages them. There is no
global model: each hospital is evaluated with its own layers (``personal``).
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from .base import Strategy, register

# BatchNorm*, SyncBatchNorm and InstanceNorm* (all _NormBase), and the GroupNorm that
# build_model(norm="group") puts in BatchNorm's place, and LayerNorm.
NORM_LAYERS = (_NormBase, nn.GroupNorm, nn.LayerNorm)


def norm_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's normalization layers: their affine weights and biases
    and their buffers (running_mean, running_var, num_batches_tracked)."""
    keys = set()
    for prefix, module in model.named_modules():
        if isinstance(module, NORM_LAYERS):
            keys.update(f"{prefix}.{name}" if prefix else name for name in module.state_dict())
    return keys


@register
class FedBN(Strategy):
    """FedAvg over everything but the normalization layers (see ``norm_keys``)."""

    name = "fedbn"
    keeps_norm_local = True
    personal = True
    needs_each_update = True  # each hospital's own layers cannot be masked together (--secagg)

    def __init__(self) -> None:
        super().__init__()
        self.local_keys: set[str] = set()

    def setup(self, model: nn.Module, num_clients: int) -> None:
        super().setup(model, num_clients)
        self.local_keys = norm_keys(model)

    def client_start(self, global_state: dict, client: int) -> tuple[dict, dict | None]:
        """The global weights with the client's own normalization layers (none before its first round)."""
        own = self.local_states.get(client)
        return (global_state if not own else {**global_state, **own}), None

    def shared(self, state):
        return {k: v for k, v in state.items() if k not in self.local_keys}

    def kept(self, update) -> dict | None:
        return {k: update.state[k] for k in self.local_keys} if self.local_keys else None
