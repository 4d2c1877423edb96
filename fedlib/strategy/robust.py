"""Robust aggregation (Yin et al., 2018): coordinate-wise median and trimmed mean, as Flower's
FedMedian and FedTrimmedAvg.

Both are unweighted, as Flower's: every update counts once whatever its sample count. The
accumulator keeps a CPU copy of every update of the round, so the server holds K models
(the FedAvg family holds one running sum). Each entry is reduced in float64 and cast back;
integer buffers are rounded, as in ``fedlib.aggregate``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from .base import Strategy, register


class KeepAll:
    """Every update of a round, reduced coordinate-wise over clients by ``reduce`` at ``result()``."""

    def __init__(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.reduce = reduce  # (clients, *shape) float64, sorted over clients -> (*shape)
        self.states: list[dict[str, torch.Tensor]] = []
        self.total_weight = 0.0
        self.count = 0

    def add(self, state: Mapping[str, torch.Tensor], weight: float) -> None:
        """Keep ``state``; ``weight`` is checked as FedAvg's would be, then not used."""
        if not weight > 0:
            raise ValueError(f"client weight must be positive, got {weight}")
        if self.states and set(state) != set(self.states[0]):
            raise ValueError("state dicts have different keys; clients must share one architecture")
        self.states.append({k: v.detach().to("cpu", copy=True) for k, v in state.items()})
        self.total_weight += weight
        self.count += 1

    def result(self) -> dict[str, torch.Tensor]:
        if not self.states:
            raise ValueError("no client state to aggregate")
        out = {}
        for key, first in self.states[0].items():
            stacked = torch.stack([s[key].to(torch.float64) for s in self.states]).sort(dim=0).values
            value = self.reduce(stacked)
            if not (first.dtype.is_floating_point or first.dtype.is_complex):
                value = torch.round(value)
            out[key] = value.to(first.dtype)
        return out


def median(stacked: torch.Tensor) -> torch.Tensor:
    """Median over dim 0 of sorted values; the mean of the two middle ones for an even count (as numpy)."""
    n = stacked.shape[0]
    return stacked[n // 2] if n % 2 else (stacked[n // 2 - 1] + stacked[n // 2]) / 2


def trimmed_mean(stacked: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean over dim 0 of sorted values after cutting ``int(fraction * n)`` from each end (as Flower, scipy)."""
    n = stacked.shape[0]
    cut = int(fraction * n)
    return stacked[cut : n - cut].mean(dim=0)


def _too_few(label: str, per_round: int) -> str | None:
    if per_round <= 2:
        return (
            f"{label} of {per_round} client(s) a round is just their mean; sample at least 3 clients a round "
            "(raise --fraction or --clients)"
        )
    return None


@register
class Median(Strategy):
    """FedMedian: the coordinate-wise median of the round's updates."""

    name = "median"
    needs_each_update = True

    def accumulator(self) -> KeepAll:
        return KeepAll(median)

    def min_updates(self) -> int:
        return 3

    def check_clients_per_round(self, per_round: int) -> str | None:
        return _too_few("the coordinate-wise median", per_round)


@register
class TrimmedMean(Strategy):
    """FedTrimmedAvg: the coordinate-wise mean after cutting the ``trim_fraction`` largest and smallest."""

    name = "trimmed_mean"
    settings = {"trim_fraction": 0.2}
    needs_each_update = True

    def __init__(self, trim_fraction: float) -> None:
        super().__init__()
        if not 0.0 < trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in (0, 0.5), got {trim_fraction}")
        self.trim_fraction = float(trim_fraction)

    def accumulator(self) -> KeepAll:
        return KeepAll(lambda stacked: trimmed_mean(stacked, self.trim_fraction))

    def min_updates(self) -> int:
        n = 3
        while int(self.trim_fraction * n) < 1:
            n += 1
        return n

    def check_clients_per_round(self, per_round: int) -> str | None:
        too_few = _too_few("the trimmed mean", per_round)
        if too_few or int(self.trim_fraction * per_round) >= 1:
            return too_few
        fraction = next(f / 1000 for f in range(1, 500) if int(f / 1000 * per_round) >= 1)
        return (
            f"the trimmed mean cuts int({self.trim_fraction} * {per_round}) = 0 updates from each end with "
            f"{per_round} clients a round, so it is the plain mean; sample at least {self.min_updates()} "
            f"clients a round (raise --fraction or --clients) or raise --trim-fraction to {fraction:g} "
            "(below 0.5)"
        )

    def __repr__(self) -> str:
        return f"TrimmedMean(trim_fraction={self.trim_fraction})"
