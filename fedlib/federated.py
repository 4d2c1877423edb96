"""FedAvg in one process: sample clients, train each locally, aggregate, evaluate.

One model instance serves every client in turn (loaded with the global weights
before each local update) and ``RunningAverage`` adds client states one at a
time, so memory does not grow with the number of clients K. Only with
``keep_optimizer_state`` does each client keep its own Adam state (K copies).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from . import runs
from .aggregate import RunningAverage, client_weights
from .experiment import Experiment
from .train import derive_seed, local_train


def sample_clients(num_clients: int, per_round: int, seed: int, round_idx: int) -> list[int]:
    """The clients of one round: ``per_round`` distinct ids from a generator seeded by
    (seed, round), so a resumed run samples what the uninterrupted run would."""
    rng = np.random.default_rng(derive_seed(seed, "sample", round_idx))
    return sorted(rng.choice(num_clients, size=per_round, replace=False).tolist())


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def run_fedavg(exp: Experiment, checkpoint: dict | None) -> dict:
    cfg = exp.cfg
    model = exp.new_model()
    history: list[dict] = []
    opt_states: dict[int, dict] = {}
    start = passes = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        opt_states = checkpoint.get("client_optimizers", {})
        start, passes = checkpoint["round"], checkpoint["sample_passes"]
        history = [r for r in runs.read_history(exp.run_dir / "history.csv") if int(r["round"]) <= start]
        exp.started -= checkpoint.get("wall_time", 0.0)
    num_clients = len(exp.parts)
    per_round = min(max(int(cfg.fraction * num_clients), 1), num_clients)
    sizes = [len(p) for p in exp.parts]

    bar = tqdm(range(start, cfg.rounds), desc=f"FedAvg {cfg.model}", unit="round",
               initial=start, total=cfg.rounds, disable=not exp.progress)
    for r in bar:
        sampled = sample_clients(num_clients, per_round, cfg.seed, r)
        weights = client_weights([sizes[c] for c in sampled], cfg.aggregation)
        global_state = cpu_state(model)
        acc = RunningAverage()
        loss_sum = 0.0
        for c, weight in zip(sampled, weights, strict=True):
            model.load_state_dict(global_state)
            res = local_train(
                model, exp.data.train_images, exp.data.train_labels, exp.parts[c],
                epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                weight_decay=cfg.weight_decay, image_size=cfg.image_size,
                seed=derive_seed(cfg.seed, "train", r, c), hw=exp.hw,
                optimizer_state=opt_states.get(c) if cfg.keep_optimizer_state else None,
            )
            if cfg.keep_optimizer_state:
                opt_states[c] = res.optimizer_state
            acc.add(model.state_dict(), weight)
            loss_sum += res.loss * res.num_examples
        model.load_state_dict(acc.result())
        passes += cfg.local_epochs * sum(sizes[c] for c in sampled)
        row = {
            "round": r + 1,
            "epoch": (r + 1) * cfg.local_epochs,
            "sample_passes": passes,
            "train_loss": loss_sum / sum(sizes[c] for c in sampled),
            "clients": ";".join(map(str, sampled)),
        }
        if (r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds:
            row.update(exp.test_metrics(model))
        row["wall_time"] = exp.elapsed()
        history.append(row)
        runs.write_history(exp.run_dir / "history.csv", history)
        if (r + 1) % cfg.checkpoint_every == 0 or r + 1 == cfg.rounds:
            # No RNG state is needed: every draw derives from (seed, round, client).
            state = {"round": r + 1, "sample_passes": passes, "model": cpu_state(model),
                     "wall_time": exp.elapsed()}
            if cfg.keep_optimizer_state:
                state["client_optimizers"] = opt_states
            runs.save_checkpoint(exp.run_dir, state)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row.get('test_accuracy', float('nan')):.3f}")
    return exp.final_metrics(model)
