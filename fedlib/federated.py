"""The federated server: sample clients, collect their updates, drop the bad ones,
aggregate with the run's strategy (``fedlib.strategy``), evaluate, checkpoint.

The server (``run_fedavg``, a ``fedlib.loop.Trainer`` whose step is one round) does
not know where clients run. It asks a client pool for one round's updates:
``InProcessClients`` trains them here, one after another on one model instance;
``fedlib.flower`` sends them to Flower SuperNodes. Updates are added to the
strategy's accumulator one at a time (for the mean-based strategies a running sum,
so memory does not grow with the number of clients K).

What differs between strategies is the strategy's (``fedlib.strategy``): what each client
starts from (FedBN: its own normalization layers; SCAFFOLD: control variates), which entries
are aggregated, what the server keeps per client, and the server's step. Differential
privacy's bookkeeping is ``fedlib.privacy.Accountant``'s. ``clients.csv`` records every
client answer of every round (used or dropped, and why), one row each.

A client that raises, takes longer than ``client_timeout`` or returns non-finite
or wrongly shaped tensors is dropped from the round, and ``history.csv`` says
which and why. The round stands if at least ``min_clients`` updates remain;
otherwise it is tried again with a fresh sample (up to ``round_retries`` times)
and then the run stops with ``RoundFailed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np
import torch

from . import privacy
from .aggregate import client_weights
from .client import Task, Update, cpu_state
from .errors import UserError
from .experiment import Experiment, mean_over_clients
from .loop import train_loop
from .parallel import Job, Outcome, Workers, fit_outcome
from .run import io
from .strategy import Strategy, from_config
from .train import derive_seed

__all__ = ["ClientResult", "InProcessClients", "RoundFailed", "Starts", "check_update", "run_fedavg", "sample_clients"]

# client -> (the weights it starts from, the strategy's extra tensors for it or None): ``Strategy.client_start``
Starts = Callable[[int], tuple[dict, "dict | None"]]


class RoundFailed(UserError):
    """Too few clients answered a round, even after the retries."""


@dataclass
class ClientResult:
    client: int
    update: Update | None  # None when the client failed
    error: str | None = None  # why it was dropped
    # The clients' answers this result stands for, with the reason clients.csv gives them; None:
    # ``client``'s own. An aggregate of several clients' updates (secure aggregation) lists each
    # member with its count and loss (``fedlib.flower.secagg``).
    reports: list[tuple[int, Update, str]] | None = None

    def answers(self) -> list[tuple[int, Update, str]]:
        """(client, its count, loss and metrics without tensors, reason) of each answer it stands for."""
        if self.reports is not None:
            return self.reports
        u = self.update
        return [(self.client, Update({}, u.num_examples, u.loss, u.metrics), "")]


class ClientPool(Protocol):
    """Where clients run: in this process, or behind Flower."""

    def fit_round(
        self,
        round_idx: int,
        clients: list[int],
        global_state: dict[str, torch.Tensor],
        attempt: int,
        starts: Starts | None = None,
    ) -> Iterator[ClientResult]:
        """Train ``clients``, each from what ``starts`` gives it (None: ``global_state`` and no
        extra tensors); results in client order."""
        ...


def start_of(global_state: dict, starts: Starts | None, c: int) -> tuple[dict, dict | None]:
    """Client ``c``'s starting weights and the strategy's extra tensors for it."""
    return (global_state, None) if starts is None else starts(c)


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
    """Every client trained in this process, one after another on one model instance, or up
    to ``cfg.parallel_clients`` at once in worker processes (``fedlib.parallel``): the same
    updates either way."""

    def __init__(self, exp: Experiment, model: torch.nn.Module, opt_states: dict[int, dict] | None = None):
        self.exp, self.model = exp, model
        self.opt_states = opt_states if opt_states is not None else {}
        self.workers = Workers(exp, exp.cfg.parallel_clients) if exp.cfg.parallel_clients > 1 else None

    def fit_round(self, round_idx, clients, global_state, attempt, starts=None) -> Iterator[ClientResult]:
        cfg = self.exp.cfg
        jobs = []
        for c in clients:
            state, extra = start_of(global_state, starts, c)
            opt_state = self.opt_states.get(c) if cfg.keep_optimizer_state else None
            jobs.append((state, Task(round_idx, c, attempt, opt_state, extra)))
        fitted = self._fit_here(jobs) if self.workers is None else self.workers.fit(jobs)
        for c, (update, opt_state, took, error) in fitted:
            if error is not None:
                yield ClientResult(c, None, error)
            elif cfg.client_timeout is not None and took > cfg.client_timeout:
                # In one process a slow client cannot be cut off; its late update is discarded.
                yield ClientResult(c, None, f"timeout ({took:.1f} s > {cfg.client_timeout:g} s)")
            else:
                if cfg.keep_optimizer_state:
                    self.opt_states[c] = opt_state
                yield ClientResult(c, update)

    def _fit_here(self, jobs: list[Job]) -> Iterator[tuple[int, Outcome]]:
        exp = self.exp
        for state, task in jobs:
            self.model.load_state_dict(state)
            data = (exp.data.train_images, exp.data.train_labels, exp.parts[task.client])
            yield task.client, fit_outcome(self.model, data, exp.cfg, exp.hw, task)

    def close(self, abort: bool = False) -> None:
        """End the worker processes, if any: after their job, or at once (``abort``)."""
        if self.workers is not None:
            self.workers.close(abort)


@dataclass
class RoundResult:
    aggregate: dict[str, torch.Tensor]  # the strategy's aggregate of the usable updates (shared entries)
    kept: dict[int, dict]  # what the strategy keeps of each answering client's update (Strategy.kept)
    updates: list[tuple[int, Update]]  # (client, its count, loss and metrics; no tensors) of the usable updates
    rows: list[dict]  # clients.csv rows of every attempt
    attempts: int
    dropped: int


def _aggregate_round(pool: ClientPool, exp: Experiment, strategy: Strategy, r: int, global_state: dict) -> RoundResult:
    """One round, retried on too few answers."""
    cfg = exp.cfg
    num_clients = len(exp.parts)
    per_round = min(max(int(cfg.fraction * num_clients), 1), num_clients)
    needed = max(min(cfg.min_clients, per_round), strategy.min_updates())
    reasons: list[str] = []
    rows: list[dict] = []
    dropped = 0
    starts = partial(strategy.client_start, global_state)
    for attempt in range(cfg.round_retries + 1):
        sampled = sample_clients(num_clients, per_round, cfg.seed, r, attempt)
        acc = strategy.accumulator()
        updates: list[tuple[int, Update]] = []
        kept: dict[int, dict] = {}
        for res in pool.fit_round(r, sampled, global_state, attempt, starts):
            error = res.error if res.update is None else check_update(res.update, global_state)
            error = error or strategy.check_update(res.update)
            base = {"round": r + 1, "attempt": attempt + 1, "client": res.client}
            if error is not None:
                reasons.append(f"{res.client}:{error}")
                rows.append({**base, "status": "dropped", "reason": error})
                dropped += 1
                continue
            u = res.update
            (weight,) = client_weights([u.num_examples], cfg.aggregation)
            acc.add(strategy.shared(u.state), weight)
            own = strategy.kept(u)
            if own is not None:
                kept[res.client] = own
            for c, answer, reason in res.answers():
                counts = {"num_examples": answer.num_examples, "train_loss": answer.loss, **answer.metrics}
                rows.append({**base, "client": c, "status": "used", "reason": reason, **counts})
                updates.append((c, answer))
        if len(updates) >= needed:
            return RoundResult(acc.result(), kept, updates, rows, attempt + 1, dropped)
        for row in rows:  # this attempt's usable updates are not used: the round starts again
            if row["attempt"] == attempt + 1 and row["status"] == "used":
                row.update(status="discarded", reason=f"round retried: fewer than {needed} usable update(s)")
    raise RoundFailed(
        f"round {r + 1}: fewer than {needed} client(s) returned a usable update in "
        f"{cfg.round_retries + 1} attempt(s) ({_summary(reasons)}); {_advice(reasons, cfg)}"
    )


def _advice(reasons: list[str], cfg) -> str:
    """What to do about a failed round: training that diverged everywhere is the settings' fault
    (a learning rate too large, DP noise), not the sites'."""
    diverged = reasons and all("non-finite" in r or "not finite" in r for r in reasons)
    if diverged and not cfg.inject_failures:
        dp = " or less differential-privacy noise (a larger --dp-target-epsilon)" if cfg.dp else ""
        return f"every client's training diverged: lower --lr (now {cfg.lr:g}){dp}, then run the command again."
    return "fix the failing sites, or lower --min-clients / raise --round-retries."


def _summary(dropped: list[str], width: int = 160) -> str:
    """Each distinct reason once, with the clients that gave it: "client 0, 2: raised ..."."""
    by_reason: dict[str, list[str]] = {}
    for entry in dropped:
        c, reason = entry.split(":", 1)
        by_reason.setdefault(reason, []).append(c)
    return "; ".join(
        f"client {', '.join(dict.fromkeys(cs))}: {reason if len(reason) <= width else reason[:width] + '...'}"
        for reason, cs in by_reason.items()
    )


class Rounds:
    """The server as a ``fedlib.loop.Trainer``: one step is one round. It samples, has the
    pool fit, aggregates and evaluates; the strategy and the privacy accountant do the rest."""

    unit = "round"
    row_key: dict = {}
    checkpoint_extra: dict = {}

    def __init__(self, exp: Experiment, checkpoint: dict | None, pool: ClientPool | None):
        cfg = self.cfg = exp.cfg
        self.exp, self.desc = exp, f"{cfg.strategy} {cfg.model}"
        self.model = exp.new_model()
        self.strategy = from_config(cfg)
        self.strategy.setup(self.model, len(exp.parts))
        self.privacy = privacy.Accountant(cfg, checkpoint)
        opt_states: dict[int, dict] = {}
        self.clients_rows: list[dict] = []
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            opt_states = checkpoint.get("client_optimizers", {})
            self.strategy.load_state_dict(checkpoint.get("strategy", {}))
            self.strategy.local_states = checkpoint.get("local_states", {})
            self.clients_rows = [
                row for row in io.read_history(exp.run_dir / "clients.csv") if int(row["round"]) <= checkpoint["round"]
            ]
        self.pool = pool if pool is not None else InProcessClients(exp, self.model, opt_states)

    def step(self, r: int) -> dict:
        cfg = self.cfg
        global_state = cpu_state(self.model)
        res = _aggregate_round(self.pool, self.exp, self.strategy, r, global_state)
        self.model.load_state_dict(self.strategy.next_state(global_state, res.aggregate, res.kept, r))
        self.privacy.account(res.updates, res.rows)
        self.clients_rows += res.rows
        io.write_history(self.exp.run_dir / "clients.csv", self.clients_rows)
        n = sum(u.num_examples for _, u in res.updates)
        row = {
            "epoch": (r + 1) * cfg.local_epochs,
            "sample_passes": cfg.local_epochs * n,
            "train_loss": sum(u.loss * u.num_examples for _, u in res.updates) / n,
            "clients_used": len(res.updates),
            "clients_dropped": res.dropped,
            "attempts": res.attempts,
        }
        return {**row, **self.privacy.row()}

    def client_model(self, c: int) -> torch.nn.Module:
        """The model client ``c`` has (``personal`` strategies: FedBN's own layers), in a copy."""
        model = self.exp.new_model()
        model.load_state_dict(self.strategy.client_model_state(cpu_state(self.model), c))
        return model

    def evaluate(self) -> dict:
        if not self.strategy.personal:
            return self.exp.test_metrics(self.model)
        # No global model (FedBN): the mean over hospitals of their own models' metrics.
        per_client = [self.exp.test_metrics(self.client_model(c)) for c in range(len(self.exp.parts))]
        return {k: float(np.mean([m[k] for m in per_client])) for k in per_client[0]}

    def state(self) -> dict:
        # No RNG state is needed: every draw derives from (seed, round, client).
        state = {
            "model": cpu_state(self.model),
            **self.privacy.state(),
            "strategy": self.strategy.state_dict(),
            "local_states": self.strategy.local_states,
        }
        if self.cfg.keep_optimizer_state:
            state["client_optimizers"] = getattr(self.pool, "opt_states", {})
        return state

    def final(self) -> dict:
        exp = self.exp
        if not self.strategy.personal:
            return exp.final_metrics(self.model)
        return mean_over_clients([exp.final_metrics(self.client_model(c), exp.parts[c]) for c in range(len(exp.parts))])


def run_fedavg(exp: Experiment, checkpoint: dict | None, history: list[dict], pool: ClientPool | None = None) -> dict:
    """Federated training for ``cfg.rounds`` rounds from ``checkpoint`` (None: from the seeded
    initial weights) with the run's strategy; returns the final metrics. ``pool`` defaults to
    in-process clients."""
    cfg = exp.cfg
    server = Rounds(exp, checkpoint, pool)
    try:
        train_loop(exp, server, cfg.rounds, history, checkpoint)
    except BaseException:
        if pool is None:  # ours: its worker processes (--parallel-clients) are killed mid-job
            server.pool.close(abort=True)
        raise
    if pool is None:
        server.pool.close()
    return {**server.final(), **server.privacy.final()}
