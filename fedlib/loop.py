"""The one training loop: pooled epochs, a local-only client's epochs and federated rounds.

Every mode is a ``Trainer`` that does one step (an epoch, or a round) and says what a
checkpoint must hold beyond the loop's own counters. ``train_loop`` does the rest once
for all of them: resume from the checkpoint, the progress bar and the one-line status in
the run folder's ``progress`` file, evaluation every
``eval_every`` steps, the history row, history.csv, checkpoints every
``checkpoint_every`` steps (written in the background, ``fedlib.checkpoint``), and the
elapsed time.

A checkpoint records how many rows history.csv had when it was written, so a resumed
run keeps exactly the rows it had made by then (``resumed_history``), in every mode.
"""

from __future__ import annotations

from typing import Protocol

from tqdm import tqdm

from .checkpoint import Writer
from .experiment import Experiment
from .run import folder, io


class Trainer(Protocol):
    unit: str  # "round" or "epoch": what one step is, and the checkpoint's counter
    desc: str  # what the progress bar and the status line call it, e.g. "pooled resnet18"
    row_key: dict  # leads every history row (local-only: the client); {} for none
    checkpoint_extra: dict  # goes into every checkpoint (local-only: which clients have finished); {} for none

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
    rows = io.read_history(exp.run_dir / "history.csv")
    return rows[: checkpoint["history_rows"]]


def train_loop(
    exp: Experiment, trainer: Trainer, total: int, history: list[dict], checkpoint: dict | None = None
) -> None:
    """Steps ``checkpoint[unit]`` (0 without one) to ``total`` of ``trainer``, labelled
    ``trainer.desc``; ``trainer.row_key`` leads every history row and
    ``trainer.checkpoint_extra`` goes into every checkpoint."""
    cfg, unit, desc = exp.cfg, trainer.unit, trainer.desc
    start = checkpoint[unit] if checkpoint is not None else 0
    passes = checkpoint["sample_passes"] if checkpoint is not None else 0
    bar = tqdm(range(start, total), desc=desc, unit=unit, initial=start, total=total, disable=not exp.progress)
    status = Status(exp, f"{desc}: {unit}", start, total)
    with Writer() as writer:  # leaving waits for the checkpoint in flight: before final.json, or on an error
        for i in bar:
            own = trainer.step(i)
            passes += own.pop("sample_passes")
            row = {**trainer.row_key, "round": i + 1, **own, "sample_passes": passes}
            if (i + 1) % cfg.eval_every == 0 or i + 1 == total:
                row.update(trainer.evaluate())
            row["wall_time"] = exp.elapsed()
            history.append(row)
            io.write_history(exp.run_dir / "history.csv", history)
            if (i + 1) % cfg.checkpoint_every == 0 or i + 1 == total:
                state = {
                    unit: i + 1,
                    "sample_passes": passes,
                    "wall_time": exp.elapsed(),
                    "history_rows": len(history),
                    **trainer.state(),
                    **trainer.checkpoint_extra,
                }
                writer.submit(exp.run_dir, state)
            bar.set_postfix(**status.update(i + 1, row))


class Status:
    """After each step: the progress bar's figures, and the one-line status in the run
    folder's ``progress`` file (what ``fedlib reproduce`` shows while a notebook trains)."""

    def __init__(self, exp: Experiment, what: str, start: int, total: int):
        self.exp, self.what, self.start, self.total = exp, what, start, total
        self.began, self.accuracy = exp.elapsed(), None

    def update(self, done: int, row: dict) -> dict:
        """Write the status after step ``done`` (1-based) with history row ``row``; returns the bar's postfix."""
        self.accuracy = row.get("test_accuracy", self.accuracy)  # the last evaluation's
        elapsed = row["wall_time"]
        left = (elapsed - self.began) / (done - self.start) * (self.total - done)  # at this session's pace
        line = progress_line(self.what, (done, self.total), row["train_loss"], self.accuracy, (elapsed, left))
        io.atomic_write_text(self.exp.run_dir / folder.PROGRESS, line + "\n")
        acc = self.accuracy if self.accuracy is not None else float("nan")
        return {"loss": f"{row['train_loss']:.3f}", "acc": f"{acc:.3f}"}  # tqdm shows them sorted


def progress_line(
    what: str, steps: tuple[int, int], loss: float, accuracy: float | None, times: tuple[float, float]
) -> str:
    """``<what> 3/12, train loss 0.912, test accuracy 0.540, 1:02 elapsed, about 3:40 left``
    from ``steps`` = (done, total) and ``times`` = (seconds elapsed, seconds left)."""
    (done, total), (elapsed, left) = steps, times
    acc = f"{accuracy:.3f}" if accuracy is not None else "-"
    return (
        f"{what} {done}/{total}, train loss {loss:.3f}, test accuracy {acc}, "
        f"{clock(elapsed)} elapsed, about {clock(left)} left"
    )


def clock(seconds: float) -> str:
    """4:05 or 1:02:03."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
