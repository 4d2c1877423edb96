"""Aggregation of client models: pure functions over state dicts.

Floating-point entries (weights and BatchNorm running statistics alike, as the
authors average everything in the state dict) are averaged in float64 and cast
back. Integer buffers (BatchNorm's ``num_batches_tracked``) are averaged the
same way and rounded to the nearest integer: a counter cannot hold 2.5, and
integer division would silently floor.

``RunningAverage`` adds one client at a time, so the server holds one running
sum however many clients a round samples: memory does not grow with K.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

AGGREGATIONS = ("weighted", "uniform")


def client_weights(num_examples: Sequence[int], mode: str) -> list[float]:
    """Weights for FedAvg: by sample count (McMahan et al.) or equal (the authors' plain mean)."""
    if mode == "weighted":
        return [float(n) for n in num_examples]
    if mode == "uniform":
        return [1.0] * len(num_examples)
    raise ValueError(f"unknown aggregation {mode!r}; choose one of {', '.join(AGGREGATIONS)}")


class RunningAverage:
    """Weighted mean of state dicts, accumulated one state dict at a time."""

    def __init__(self) -> None:
        self._sum: dict[str, torch.Tensor] = {}
        self._dtypes: dict[str, torch.dtype] = {}
        self.total_weight = 0.0
        self.count = 0

    def add(self, state: Mapping[str, torch.Tensor], weight: float) -> None:
        if not weight > 0:
            raise ValueError(f"client weight must be positive, got {weight}")
        if self._sum and set(state) != set(self._sum):
            raise ValueError("state dicts have different keys; clients must share one architecture")
        for key, value in state.items():
            v = value.detach().to("cpu", torch.float64) * weight
            if key in self._sum:
                self._sum[key] += v
            else:
                self._sum[key] = v
                self._dtypes[key] = value.dtype
        self.total_weight += weight
        self.count += 1

    def result(self) -> dict[str, torch.Tensor]:
        if not self.count:
            raise ValueError("no client state to aggregate")
        out = {}
        for key, total in self._sum.items():
            mean = total / self.total_weight
            dtype = self._dtypes[key]
            if not (dtype.is_floating_point or dtype.is_complex):
                mean = torch.round(mean)
            out[key] = mean.to(dtype)
        return out


def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Weighted mean of whole state dicts (see the module docstring for buffers)."""
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} states but {len(weights)} weights")
    acc = RunningAverage()
    for state, weight in zip(states, weights, strict=True):
        acc.add(state, weight)
    return acc.result()


def fedavg(
    states: Sequence[Mapping[str, torch.Tensor]], num_examples: Sequence[int], mode: str = "weighted"
) -> dict[str, torch.Tensor]:
    """FedAvg of client state dicts: ``weighted`` by sample count or ``uniform``."""
    return weighted_average(states, client_weights(num_examples, mode))
