"""The baselines without federation: pooled (centralized) and local-only training.

Pooled training trains one model on every client's images for
``cfg.pooled_epochs`` epochs (the paper: R x E = 300). Its epoch e uses the seed
that FedAvg's round e gives client 0, so FedAvg with K=1, C=1, E=1 and one epoch
of pooled training see the same batches and end with the same weights.

Local-only training gives each client its own model, trained on its own images
alone for the same number of epochs and evaluated on the shared test set: the
"each hospital by itself" reference of FLamby.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from . import runs
from .client import class_weights, cpu_state
from .experiment import Experiment
from .train import derive_seed, local_train


def _train_epochs(exp: Experiment, indices: np.ndarray, client: int | None, checkpoint: dict | None,
                  history: list[dict], done: dict | None = None) -> object:
    """Epoch loop shared by pooled training (client None) and each local-only client."""
    cfg = exp.cfg
    model = exp.new_model()
    opt_state, start, passes = None, 0, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        opt_state, start, passes = checkpoint["optimizer"], checkpoint["epoch"], checkpoint["sample_passes"]
    epochs = cfg.pooled_epochs
    name = "pooled" if client is None else f"local client {client}"
    bar = tqdm(range(start, epochs), desc=f"{name} {cfg.model}", unit="epoch", initial=start,
               total=epochs, disable=not exp.progress)
    for e in bar:
        res = local_train(
            model, exp.data.train_images, exp.data.train_labels, indices,
            epochs=1, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
            image_size=cfg.image_size, seed=derive_seed(cfg.seed, "train", e, client or 0),
            hw=exp.hw, optimizer_state=opt_state,
            class_weight=class_weights(cfg, exp.data.train_labels[indices], len(exp.data.classes)),
        )
        opt_state = res.optimizer_state
        passes += len(indices)
        row = {"round": e + 1, "epoch": e + 1, "sample_passes": passes, "train_loss": res.loss}
        if client is not None:
            row = {"client": client, **row}
        if (e + 1) % cfg.eval_every == 0 or e + 1 == epochs:
            row.update(exp.test_metrics(model))
        row["wall_time"] = exp.elapsed()
        history.append(row)
        runs.write_history(exp.run_dir / "history.csv", history)
        if (e + 1) % cfg.checkpoint_every == 0 or e + 1 == epochs:
            runs.save_checkpoint(exp.run_dir, {
                "client": client, "epoch": e + 1, "sample_passes": passes, "model": cpu_state(model),
                "optimizer": opt_state, "wall_time": exp.elapsed(), "done": done or {},
            })
        bar.set_postfix(loss=f"{res.loss:.3f}", acc=f"{row.get('test_accuracy', float('nan')):.3f}")
    return model


def _resumed_history(exp: Experiment, checkpoint: dict | None) -> list[dict]:
    if checkpoint is None:
        return []
    exp.started -= checkpoint.get("wall_time", 0.0)
    rows = runs.read_history(exp.run_dir / "history.csv")
    client = checkpoint.get("client")
    keep = []
    for row in rows:
        row_client = int(row["client"]) if row.get("client") not in (None, "") else None
        if client is None or row_client is None:
            if int(row["epoch"]) <= checkpoint["epoch"]:
                keep.append(row)
        elif row_client < client or (row_client == client and int(row["epoch"]) <= checkpoint["epoch"]):
            keep.append(row)
    return keep


def run_central(exp: Experiment, checkpoint: dict | None) -> dict:
    history = _resumed_history(exp, checkpoint)
    model = _train_epochs(exp, exp.train_idx, None, checkpoint, history)
    return exp.final_metrics(model)


def run_local(exp: Experiment, checkpoint: dict | None) -> dict:
    """Each client alone; final.json holds each client's metrics and their mean."""
    history = _resumed_history(exp, checkpoint)
    done: dict = dict(checkpoint["done"]) if checkpoint else {}
    first = checkpoint["client"] if checkpoint else 0
    if checkpoint is not None and checkpoint["epoch"] >= exp.cfg.pooled_epochs:
        first, checkpoint = first + 1, None  # that client had finished
    for c in range(first, len(exp.parts)):
        model = _train_epochs(exp, exp.parts[c], c, checkpoint if c == first else None, history, done)
        done[c] = exp.final_metrics(model, exp.parts[c])
        state = cpu_state(model)
        runs.save_torch(exp.run_dir / "checkpoints" / f"client{c}.pt", state)
        # Mark the client finished in a checkpoint, so a resume does not train it again.
        runs.save_checkpoint(exp.run_dir, {"client": c, "epoch": exp.cfg.pooled_epochs, "sample_passes": 0,
                                           "model": state, "optimizer": None,
                                           "wall_time": exp.elapsed(), "done": done})
    per_client = [done[c] for c in range(len(exp.parts))]
    mean = {split: {k: float(np.mean([m[split][k] for m in per_client]))
                    for k, v in per_client[0][split].items() if isinstance(v, int | float)}
            for split in ("train", "test")}
    return {**mean, "per_client": per_client}
