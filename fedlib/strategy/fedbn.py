"""FedBN (Li et al., 2021): normalization layers stay at each client; the rest is averaged as FedAvg.

The server side is FedAvg's. The caller leaves ``norm_keys(model)`` out of the updates it
aggregates and keeps each client's normalization entries itself; this module only names them.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from .base import Strategy

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


class FedBN(Strategy):
    """FedAvg over everything but the normalization layers (see ``norm_keys``)."""

    name = "fedbn"
    keeps_norm_local = True
