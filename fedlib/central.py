"""The baselines without federation: pooled (centralized) and local-only training.

Pooled training trains one model on every client's images for
``cfg.pooled_epochs`` epochs (the paper: R x E = 300). Its epoch e uses the seed
that FedAvg's round e gives client 0, so FedAvg with K=1, C=1, E=1 and one epoch
of pooled training see the same batches and end with the same weights.

Local-only training gives each client its own model, trained on its own images
alone for the same number of epochs and evaluated on the shared test set: the
"each hospital by itself" reference of FLamby.

Both are a ``fedlib.loop.Trainer`` whose step is one epoch; the loop does the rest.
"""

from __future__ import annotations

import numpy as np

from .client import class_weights, cpu_state, local_spec
from .experiment import Experiment, mean_over_clients
from .loop import train_loop
from .run import io
from .train import derive_seed, local_train


class Epochs:
    """One model trained epoch by epoch on ``indices`` (pooled: client None)."""

    unit = "epoch"
    row_key: dict = {}  # run_local sets the client's, and which clients have finished
    checkpoint_extra: dict = {}

    def __init__(self, exp: Experiment, indices: np.ndarray, client: int | None, checkpoint: dict | None):
        self.exp, self.indices, self.client = exp, indices, client
        self.desc = f"pooled {exp.cfg.model}" if client is None else f"local client {client} {exp.cfg.model}"
        self.model = exp.new_model()
        self.opt_state = None
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.opt_state = checkpoint["optimizer"]

    def step(self, e: int) -> dict:
        cfg, d = self.exp.cfg, self.exp.data
        seed = derive_seed(cfg.seed, "train", e, self.client or 0)
        weight = class_weights(cfg, d.train_labels[self.indices], len(d.classes))
        spec = local_spec(cfg, self.exp.hw, seed, weight, epochs=1)
        res = local_train(self.model, d.train_images, d.train_labels, self.indices, spec, self.opt_state)
        self.opt_state = res.optimizer_state
        return {"epoch": e + 1, "sample_passes": len(self.indices), "train_loss": res.loss}

    def evaluate(self) -> dict:
        return self.exp.test_metrics(self.model)

    def state(self) -> dict:
        return {"client": self.client, "model": cpu_state(self.model), "optimizer": self.opt_state}


def run_central(exp: Experiment, checkpoint: dict | None, history: list[dict]) -> dict:
    trainer = Epochs(exp, exp.train_idx, None, checkpoint)
    train_loop(exp, trainer, exp.cfg.pooled_epochs, history, checkpoint)
    return exp.final_metrics(trainer.model)


def run_local(exp: Experiment, checkpoint: dict | None, history: list[dict]) -> dict:
    """Each client alone; final.json holds each client's metrics and their mean."""
    epochs = exp.cfg.pooled_epochs
    done: dict = dict(checkpoint["finished"]) if checkpoint else {}
    first = checkpoint["client"] if checkpoint else 0
    if checkpoint is not None and checkpoint["epoch"] >= epochs:
        first, checkpoint = first + 1, None  # that client had finished
    for c in range(first, len(exp.parts)):
        start = checkpoint if c == first else None
        trainer = Epochs(exp, exp.parts[c], c, start)
        trainer.row_key, trainer.checkpoint_extra = {"client": c}, {"finished": done}
        train_loop(exp, trainer, epochs, history, start)
        done[c] = exp.final_metrics(trainer.model, exp.parts[c])
        state = cpu_state(trainer.model)
        io.save_torch(exp.run_dir / "checkpoints" / f"client{c}.pt", state)
        # Mark the client finished in a checkpoint, so a resume does not train it again.
        io.save_checkpoint(
            exp.run_dir,
            {
                "client": c,
                "epoch": epochs,
                "sample_passes": 0,
                "model": state,
                "optimizer": None,
                "wall_time": exp.elapsed(),
                "history_rows": len(history),
                "finished": done,
            },
        )
    return mean_over_clients([done[c] for c in range(len(exp.parts))])
