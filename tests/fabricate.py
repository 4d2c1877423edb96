"""Tiny hand-made run folders for the analysis tests (fedlib.run.results, fedlib.report): the
config.json, final.json and history.csv a finished run leaves, written with fedlib.run.io's
own writers, every number chosen by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedlib.metrics import summarize_confusion
from fedlib.run.folder import run_name
from fedlib.run.io import write_history, write_json

CLASSES = ["pneumonia", "normal", "COVID-19"]
DESCRIPTION = "SYNTHETIC chest X-rays (48 train / 24 test images)"


def diagonal(right: tuple[int, int, int], per_class: int = 8) -> list[list[int]]:
    """A confusion matrix with ``per_class`` true images per class, ``right[i]`` of class i
    predicted correctly and the rest called the next class."""
    cm = np.zeros((3, 3), dtype=int)
    for i, r in enumerate(right):
        cm[i, i] = r
        cm[i, (i + 1) % 3] = per_class - r
    return cm.tolist()


# 24 test images, 20 of them pneumonia, every one predicted pneumonia: accuracy 20/24, balanced 1/3.
MAJORITY = [[20, 0, 0], [2, 0, 0], [2, 0, 0]]


def metrics(cm) -> dict:
    return {"loss": 1.0, **summarize_confusion(np.asarray(cm), tuple(CLASSES)), "confusion": cm}


def history(losses, passes_per_round: int, accuracies=None, local_epochs: int = 1) -> list[dict]:
    accuracies = accuracies if accuracies is not None else [0.5] * len(losses)
    return [
        {
            "round": r,
            "epoch": r * local_epochs,
            "sample_passes": r * passes_per_round,
            "train_loss": loss,
            "test_loss": 1.0,
            "test_accuracy": acc,
            "wall_time": float(r),
        }
        for r, (loss, acc) in enumerate(zip(losses, accuracies, strict=True), 1)
    ]


def write_run(
    runs_dir: Path,
    model: str,
    mode: str,
    seed: int,
    *,
    test,
    train=None,
    rows=None,
    fingerprint: str = "f00d",
    description: str = DESCRIPTION,
    params: int = 1000,
    **config,
) -> Path:
    """A finished run folder ``<runs_dir>/<model>-<mode>-seed<seed>``; ``test`` and ``train`` are
    confusion matrices (train defaults to all right)."""
    run = Path(runs_dir) / run_name(model, mode, seed)
    run.mkdir(parents=True)
    cfg = {
        "model": model,
        "mode": mode,
        "seed": seed,
        "profile": "smoke",
        "image_size": 32,
        "data_fingerprint": fingerprint,
        "rounds": 2,
        "local_epochs": 1,
        "clients": 3,
        "fraction": 0.67,
        "central_epochs": None,
        "pooled_budget": "paper",
        "val_fraction": 0.0,
        "class_weight": "none",
        "subset": None,
        "test_subset": None,
        **config,
    }
    write_json(run / "config.json", cfg)
    write_json(
        run / "final.json",
        {
            "model": model,
            "mode": mode,
            "profile": cfg["profile"],
            "seed": seed,
            "synthetic": "SYNTHETIC" in description,
            "data_description": description,
            "classes": CLASSES,
            "params": params,
            "train": metrics(train if train is not None else diagonal((8, 8, 8))),
            "test": metrics(test),
        },
    )
    write_history(run / "history.csv", rows if rows is not None else history([1.0, 0.5], 32))
    return run
