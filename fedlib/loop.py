"""The one training loop: pooled epochs, a local-only client's epochs and federated rounds.

Every mode is a ``Trainer`` that does one step (an epoch, or a round) and says what a
checkpoint must hold beyond the loop's own counters. ``train_loop`` does the rest once
for all of them: resume from the checkpoint, the progress bar, evaluation every
``eval_every`` steps, the history row, history.csv, checkpoints every
``checkpoint_every`` steps (written in the background, ``fedlib.checkpoint``), and the
elapsed time.

A checkpoint records how many rows history.csv had when it was written, so a resumed
run keeps exactly the rows it had made by then (``resumed_history``), in every mode.
"""

from __future__ import annotations

from typing import Protocol

from tqdm import tqdm

from . import runs
from .checkpoint import Writer
from .experiment import Experiment


class Trainer(Protocol):
    unit: str  # "round" or "epoch": what one step is, and the checkpoint's counter

    def step(self, i: int) -> dict:
        """Train step ``i`` (0-based); the history row's own fields, with ``sample_passes``
        counting the images this step processed."""
        ...

    def evaluate(self) -> dict:
        """The history row's evaluation of the current model(s)."""
        ...

    def state(self) -> dict:
        """What a checkpoint needs to continue exactly (weights, optimizer and server state)."""
        ...


def resumed_history(exp: Experiment, checkpoint: dict | None) -> list[dict]:
    """The rows of history.csv that the checkpoint had written; moves the run's clock to the
    time it had spent."""
    if checkpoint is None:
        return []
    exp.started -= checkpoint.get("wall_time", 0.0)
    rows = runs.read_history(exp.run_dir / "history.csv")
    return rows[: checkpoint["history_rows"]]


def train_loop(
    exp: Experiment,
    trainer: Trainer,
    total: int,
    history: list[dict],
    *,
    desc: str,
    checkpoint: dict | None = None,
    key: dict | None = None,
    extra: dict | None = None,
) -> None:
    """Steps ``checkpoint[unit]`` (0 without one) to ``total`` of ``trainer``.

    ``key`` leads every history row (local-only: the client); ``extra`` goes into every
    checkpoint (local-only: which clients have finished)."""
    cfg, unit = exp.cfg, trainer.unit
    start = checkpoint[unit] if checkpoint is not None else 0
    passes = checkpoint["sample_passes"] if checkpoint is not None else 0
    bar = tqdm(range(start, total), desc=desc, unit=unit, initial=start, total=total, disable=not exp.progress)
    with Writer() as writer:  # leaving waits for the checkpoint in flight: before final.json, or on an error
        for i in bar:
            own = trainer.step(i)
            passes += own.pop("sample_passes")
            row = {**(key or {}), "round": i + 1, **own, "sample_passes": passes}
            if (i + 1) % cfg.eval_every == 0 or i + 1 == total:
                row.update(trainer.evaluate())
            row["wall_time"] = exp.elapsed()
            history.append(row)
            runs.write_history(exp.run_dir / "history.csv", history)
            if (i + 1) % cfg.checkpoint_every == 0 or i + 1 == total:
                state = {
                    unit: i + 1,
                    "sample_passes": passes,
                    "wall_time": exp.elapsed(),
                    "history_rows": len(history),
                    **trainer.state(),
                    **(extra or {}),
                }
                writer.submit(exp.run_dir, state)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row.get('test_accuracy', float('nan')):.3f}")
