"""Secure aggregation on Flower: the server learns the weighted sum of a round's
updates, never one site's update (Flower's SecAgg+, Bell et al. 2020).

``SecAggClients`` is a client pool for fedlib's FedAvg server
(``fedlib.federated``): for each round it runs Flower's ``SecAggPlusWorkflow``
(key agreement, secret sharing, masked and quantised vectors, unmasking) with
the round's sampled sites and hands the server a single result, the weighted
average of their models, with the sites it covers as ``reports``. The sites run
``fedlib.client.fit`` as always; ``route`` sends their SecAgg+ messages through
Flower's ``secaggplus_mod``, which masks the update before it leaves the site.

What the server still sees per site: its sample count and training loss (the
protocol sends them in the clear, to weight the average), and whether it
answered. What it cannot do: check one site's update (NaN, shape) before
aggregating; ``fedlib.federated.check_update`` then checks the aggregate.

Precision: each value is clipped to +-``CLIP`` and quantised to ``QUANT`` levels,
weighted by (sample count / largest site), so the aggregate differs from plain
FedAvg by at most about n x 2 x CLIP / QUANT / (total weight) per value
(``quantisation_bound``); BatchNorm's integer counters are rounded back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from .. import client
from ..client import Update
from ..config import TrainConfig, to_dict
from ..federated import ClientResult, start_of
from .site import load_site

CLIP = 1024.0  # |value| bound before quantisation: covers BatchNorm running variances
QUANT = 2**28  # quantisation levels; the modulus 2**32 leaves room to add 16 sites


def quantisation_bound(num_sites: int, weights: list[float]) -> float:
    """Largest difference, per value, between the SecAgg+ aggregate and plain FedAvg."""
    return num_sites * 2 * CLIP / QUANT / (sum(weights) / max(weights))


def to_arrays(state: dict[str, torch.Tensor]) -> list[np.ndarray]:
    # 0-d tensors (BatchNorm's counters) go as 1-element vectors: SecAgg+'s dequantisation
    # turns 0-d arrays into NumPy scalars and then skips their offset.
    return [np.atleast_1d(v.detach().cpu().double().numpy()) for v in state.values()]


def to_state(arrays: list[np.ndarray], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for (key, ref), array in zip(like.items(), arrays, strict=True):
        value = torch.from_numpy(np.asarray(array, dtype=np.float64)).reshape(ref.shape)
        out[key] = (value if ref.is_floating_point() else torch.round(value)).to(ref.dtype)
    return out


# ---- the site ---------------------------------------------------------------------------------


def _train(msg: Message, context: Context) -> Message:
    """One local update, in the legacy FitIns/FitRes form that ``secaggplus_mod`` masks."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    task = fitins.config
    cfg = TrainConfig(**json.loads(str(task["train-config"])))
    round_idx, attempt, client_id = int(task["round"]), int(task["attempt"]), int(task["client"])
    exp, indices, model = load_site(json.dumps(to_dict(cfg)), json.dumps(dict(context.node_config), sort_keys=True))
    model.load_state_dict(to_state(parameters_to_ndarrays(fitins.parameters), model.state_dict()))
    data = (exp.data.train_images, exp.data.train_labels, indices)
    update, _ = client.fit(model, data, cfg, exp.hw, client.Task(round_idx, client_id, attempt))
    fitres = FitRes(
        Status(Code.OK, ""),
        ndarrays_to_parameters(to_arrays(update.state)),
        update.num_examples,
        {"train-loss": float(update.loss)},
    )
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


def route(msg: Message, context: Context, call_next) -> Message:
    """ClientApp mod: SecAgg+ messages go through ``secaggplus_mod`` to ``_train``; the rest
    (plain FedAvg, discovery) go on to the ClientApp's own functions."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, _train)
    return call_next(msg, context)


# ---- the server -------------------------------------------------------------------------------


class _OneRound(Strategy):
    """A Strategy with nothing to decide: fedlib sampled the sites; keep what SecAgg+ returns."""

    def __init__(self, instructions):
        self.instructions, self.results = instructions, []

    def initialize_parameters(self, client_manager):
        return None

    def configure_fit(self, server_round, parameters, client_manager):
        return self.instructions

    def aggregate_fit(self, server_round, results, failures):
        self.results = results  # each FitRes carries the aggregate, and its own count and metrics
        return (results[0][1].parameters if results else None), {}

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


class SecAggClients:
    """The server's client pool with SecAgg+: one masked aggregate per round."""

    def __init__(self, grid, exp, context: Context, nodes: dict[int, int], timeout: float):
        self.grid, self.cfg, self.context, self.timeout = grid, exp.cfg, context, timeout
        self.nodes, self.clients = nodes, {node: c for c, node in nodes.items()}
        self.max_weight = float(max(len(p) for p in exp.parts))

    def fit_round(self, round_idx, clients, global_state, attempt, starts=None) -> Iterator[ClientResult]:
        for c in clients:
            state, extra = start_of(global_state, starts, c)
            if state is not global_state or extra:
                raise ValueError(
                    "SecAgg+ sums whole models; a strategy's per-client state (FedBN's layers, SCAFFOLD's "
                    "control variates) cannot be masked together"
                )
        params = ndarrays_to_parameters(to_arrays(global_state))
        task = {"round": round_idx, "attempt": attempt, "train-config": json.dumps(to_dict(self.cfg))}
        strategy = _OneRound(
            [
                (GridClientProxy(self.nodes[c], self.grid, self.context.run_id), FitIns(params, {**task, "client": c}))
                for c in clients
            ]
        )
        legacy = LegacyContext(self.context, ServerConfig(num_rounds=1), strategy, SimpleClientManager())
        legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: round_idx + 1})
        legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params, keep_input=True)
        # Every sampled site holds a share of every other's key; 2/3 of them rebuild a dropped one's.
        SecAggPlusWorkflow(
            num_shares=1.0,
            reconstruction_threshold=0.67,
            max_weight=self.max_weight,
            clipping_range=CLIP,
            quantization_range=QUANT,
            timeout=self.timeout,
        )(self.grid, legacy)
        members = sorted(self.clients[proxy.node_id] for proxy, _ in strategy.results)
        for c in clients:
            if c not in members:
                yield ClientResult(c, None, "no masked update (dropped out of secure aggregation)")
        if len(members) < 2:
            return  # SecAgg+ needs two sites at least; the server retries or stops
        counts = [res.num_examples for _, res in strategy.results]
        losses = [float(res.metrics["train-loss"]) for _, res in strategy.results]
        state = to_state(parameters_to_ndarrays(strategy.results[0][1].parameters), global_state)
        update = Update(state, sum(counts), float(np.dot(counts, losses) / sum(counts)))
        each = sorted(
            (self.clients[proxy.node_id], res.num_examples, float(res.metrics["train-loss"]))
            for proxy, res in strategy.results
        )
        # clients.csv: each member's count and loss, nothing else
        reports = [(c, Update({}, n, loss), "secure aggregate") for c, n, loss in each]
        yield ClientResult(members[0], update, reports=reports)
