"""The FedAvg server: sample clients, collect their updates, drop the bad ones,
aggregate, evaluate, checkpoint.

The server loop (``run_fedavg``) does not know where clients run. It asks a
client pool for one round's updates: ``InProcessClients`` trains them here, one
after another on one model instance; ``fedlib.flower`` sends them to Flower
SuperNodes. Updates are added to a ``RunningAverage`` one at a time, so memory
does not grow with the number of clients K.

A client that raises, takes longer than ``client_timeout`` or returns non-finite
or wrongly shaped tensors is dropped from the round, and ``history.csv`` says
which and why. The round stands if at least ``min_clients`` updates remain;
otherwise it is tried again with a fresh sample (up to ``round_retries`` times)
and then the run stops with ``RoundFailed``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from . import client, privacy, runs
from .aggregate import RunningAverage, client_weights
from .client import Update, cpu_state
from .errors import UserError
from .experiment import Experiment
from .train import derive_seed

__all__ = ["ClientResult", "InProcessClients", "RoundFailed", "check_update", "run_fedavg", "sample_clients"]


class RoundFailed(UserError):
    """Too few clients answered a round, even after the retries."""


@dataclass
class ClientResult:
    client: int
    update: Update | None  # None when the client failed
    error: str | None = None  # why it was dropped
    members: list[int] | None = None  # an aggregate of these clients' updates (secure aggregation)


class ClientPool(Protocol):
    """Where clients run: in this process, or behind Flower."""

    def fit_round(self, round_idx: int, clients: list[int], global_state: dict[str, torch.Tensor],
                  attempt: int) -> Iterator[ClientResult]: ...


def sample_clients(num_clients: int, per_round: int, seed: int, round_idx: int, attempt: int = 0) -> list[int]:
    """The clients of one round: ``per_round`` distinct ids from a generator seeded by
    (seed, round[, attempt]), so a resumed run samples what the uninterrupted run would."""
    keys = ("sample", round_idx) if attempt == 0 else ("sample", round_idx, attempt)
    rng = np.random.default_rng(derive_seed(seed, *keys))
    return sorted(rng.choice(num_clients, size=per_round, replace=False).tolist())


def check_update(update: Update, reference: Mapping[str, torch.Tensor]) -> str | None:
    """Why an update cannot be aggregated (names, shapes, finite values), or None."""
    if set(update.state) != set(reference):
        return "parameter names differ from the global model"
    for key, ref in reference.items():
        value = update.state[key]
        if value.shape != ref.shape:
            return f"{key} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"{key} holds non-finite values"
    if not (isinstance(update.num_examples, int) and update.num_examples > 0):
        return f"sample count {update.num_examples!r} is not a positive integer"
    if not np.isfinite(update.loss):
        return "training loss is not finite"
    return None


class InProcessClients:
    """Every client trained in this process, in turn, on one model instance."""

    def __init__(self, exp: Experiment, model: torch.nn.Module, opt_states: dict[int, dict] | None = None):
        self.exp, self.model = exp, model
        self.opt_states = opt_states if opt_states is not None else {}

    def fit_round(self, round_idx, clients, global_state, attempt) -> Iterator[ClientResult]:
        exp, cfg = self.exp, self.exp.cfg
        for c in clients:
            self.model.load_state_dict(global_state)
            started = time.perf_counter()
            try:
                update, opt_state = client.fit(
                    self.model, exp.data.train_images, exp.data.train_labels, exp.parts[c], cfg, exp.hw,
                    round_idx, c, attempt, self.opt_states.get(c) if cfg.keep_optimizer_state else None)
            except Exception as exc:  # a failing site must not take the federation down
                yield ClientResult(c, None, f"raised {type(exc).__name__}: {exc}")
                continue
            took = time.perf_counter() - started
            if cfg.client_timeout is not None and took > cfg.client_timeout:
                # In one process a slow client cannot be cut off; its late update is discarded.
                yield ClientResult(c, None, f"timeout ({took:.1f} s > {cfg.client_timeout:g} s)")
                continue
            if cfg.keep_optimizer_state:
                self.opt_states[c] = opt_state
            yield ClientResult(c, update)


def _aggregate_round(pool: ClientPool, exp: Experiment, r: int, global_state: dict) -> dict:
    """One round, retried on too few answers; returns the new state and what happened."""
    cfg = exp.cfg
    num_clients = len(exp.parts)
    per_round = min(max(int(cfg.fraction * num_clients), 1), num_clients)
    dropped: list[str] = []
    for attempt in range(cfg.round_retries + 1):
        sampled = sample_clients(num_clients, per_round, cfg.seed, r, attempt)
        good: list[tuple[str, Update]] = []  # (client id(s), the update's count, loss and metrics)
        answered = 0
        acc = RunningAverage()
        for res in pool.fit_round(r, sampled, global_state, attempt):
            error = res.error if res.update is None else check_update(res.update, global_state)
            if error is not None:
                dropped.append(f"{res.client}:{error}".replace(";", ","))
                continue
            (weight,) = client_weights([res.update.num_examples], cfg.aggregation)
            acc.add(res.update.state, weight)
            members = res.members or [res.client]
            good.append((";".join(map(str, members)), Update({}, res.update.num_examples, res.update.loss,
                                                              res.update.metrics)))
            answered += len(members)
        if answered >= min(cfg.min_clients, per_round):
            n = sum(u.num_examples for _, u in good)
            row = {
                "clients": ";".join(c for c, _ in good),
                "dropped": ";".join(dropped),
                "attempts": attempt + 1,
                "train_loss": sum(u.loss * u.num_examples for _, u in good) / n,
            }
            for key in sorted({k for _, u in good for k in u.metrics}):
                row[key] = ";".join(f"{c}:{u.metrics[key]:.6g}" for c, u in good if key in u.metrics)
            return {"state": acc.result(), "passes": cfg.local_epochs * n, "row": row, "updates": good}
    raise RoundFailed(
        f"round {r + 1}: fewer than {cfg.min_clients} client(s) returned a usable update in "
        f"{cfg.round_retries + 1} attempt(s) ({_summary(dropped)}); fix the failing sites, or lower "
        "--min-clients / raise --round-retries."
    )


def _summary(dropped: list[str], width: int = 160) -> str:
    """Each distinct reason once, with the clients that gave it: "client 0, 2: raised ..."."""
    by_reason: dict[str, list[str]] = {}
    for entry in dropped:
        c, reason = entry.split(":", 1)
        by_reason.setdefault(reason, []).append(c)
    return "; ".join(f"client {', '.join(dict.fromkeys(cs))}: "
                     f"{reason if len(reason) <= width else reason[:width] + '...'}" for reason, cs in by_reason.items())


def run_fedavg(exp: Experiment, checkpoint: dict | None, pool: ClientPool | None = None) -> dict:
    """FedAvg for ``cfg.rounds`` rounds from ``checkpoint`` (None: from the seeded
    initial weights); returns the final metrics. ``pool`` defaults to in-process clients."""
    cfg = exp.cfg
    model = exp.new_model()
    history: list[dict] = []
    opt_states: dict[int, dict] = {}
    spent: dict[int, float] = {}  # DP epsilon spent so far, per client
    dp_steps: dict[int, int] = {}  # DP-SGD steps taken so far, per client
    start = passes = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        opt_states = checkpoint.get("client_optimizers", {})
        dp_steps, spent = checkpoint.get("dp_steps", {}), checkpoint.get("dp_epsilon", {})
        start, passes = checkpoint["round"], checkpoint["sample_passes"]
        history = [r for r in runs.read_history(exp.run_dir / "history.csv") if int(r["round"]) <= start]
        exp.started -= checkpoint.get("wall_time", 0.0)
    if pool is None:
        pool = InProcessClients(exp, model, opt_states)

    bar = tqdm(range(start, cfg.rounds), desc=f"FedAvg {cfg.model}", unit="round",
               initial=start, total=cfg.rounds, disable=not exp.progress)
    for r in bar:
        result = _aggregate_round(pool, exp, r, cpu_state(model))
        model.load_state_dict(result["state"])
        passes += result["passes"]
        row = {"round": r + 1, "epoch": (r + 1) * cfg.local_epochs, "sample_passes": passes, **result["row"]}
        if cfg.dp:
            row["epsilon"] = _account(result["updates"], dp_steps, spent, cfg)
        if (r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds:
            row.update(exp.test_metrics(model))
        row["wall_time"] = exp.elapsed()
        history.append(row)
        runs.write_history(exp.run_dir / "history.csv", history)
        if (r + 1) % cfg.checkpoint_every == 0 or r + 1 == cfg.rounds:
            # No RNG state is needed: every draw derives from (seed, round, client).
            state = {"round": r + 1, "sample_passes": passes, "model": cpu_state(model),
                     "wall_time": exp.elapsed(), "dp_steps": dp_steps, "dp_epsilon": spent}
            if cfg.keep_optimizer_state:
                state["client_optimizers"] = getattr(pool, "opt_states", {})
            runs.save_checkpoint(exp.run_dir, state)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row.get('test_accuracy', float('nan')):.3f}")
    final = exp.final_metrics(model)
    if cfg.dp:
        final["privacy"] = {"delta": cfg.dp_delta, "epsilon_per_client": {str(c): e for c, e in sorted(spent.items())},
                            "epsilon_max": max(spent.values(), default=0.0)}
    return final


def _account(updates: list[tuple[str, Update]], dp_steps: dict[int, int], spent: dict[int, float], cfg) -> str:
    """Add this round's DP-SGD steps to each client's total; the epsilon each has spent so far."""
    for label, u in updates:
        c = int(label)
        dp_steps[c] = dp_steps.get(c, 0) + int(u.metrics["dp_steps"])
        dp = privacy.DPSettings(u.metrics["dp_noise_multiplier"], cfg.dp_max_grad_norm, u.metrics["dp_sample_rate"])
        spent[c] = privacy.epsilon(dp, dp_steps[c], cfg.dp_delta)
    return ";".join(f"{c}:{spent[int(c)]:.4g}" for c, _ in updates)
