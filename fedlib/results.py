"""Run folders as data: the one place that knows how a reproduction names its runs
and how to read them back (config, history, final metrics).

``fedlib reproduce`` writes ``<runs_dir>/<model>-<mode>-seed<seed>/``; plots,
Grad-CAM++ and the notebooks read them through ``find_runs``. A set of runs
that mixes data sets or profiles cannot be drawn into one figure:
``check_one_dataset`` refuses it with one sentence naming the odd run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from .errors import UserError

# What must agree between runs drawn into one figure or table.
SAME_IN_ONE_REPORT = ("data_fingerprint", "profile", "image_size")


def run_name(model: str, mode: str, seed: int) -> str:
    """The folder name of one (model, mode, seed) run inside a reproduction's runs_dir."""
    return f"{model}-{mode}-seed{seed}"


@dataclass
class Run:
    path: Path
    config: dict  # config.json
    final: dict  # final.json

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def mode(self) -> str:
        return self.config["mode"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @cached_property
    def history(self) -> pd.DataFrame:
        path = self.path / "history.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def is_finished(run_dir) -> bool:
    return (Path(run_dir) / "final.json").is_file() and (Path(run_dir) / "config.json").is_file()


def load_run(run_dir) -> Run:
    """A finished run; an unfinished or foreign folder is a UserError."""
    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        raise UserError(f"{run_dir} holds no finished run (no final.json); train it first "
                        f"(`fedlib train --out {run_dir}` or `fedlib reproduce`).")
    try:
        config = json.loads((run_dir / "config.json").read_text())
        final = json.loads((run_dir / "final.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{run_dir} has an unreadable config.json or final.json ({exc}); "
                        "train it again with --overwrite.") from None
    return Run(run_dir, config, final)


def find_runs(runs_dir, models: Iterable[str] | None = None, modes: Iterable[str] | None = None,
              seeds: Iterable[int] | None = None) -> list[Run]:
    """The finished runs in ``runs_dir`` (one level down) that match the filters, sorted by
    (model, mode, seed); unfinished folders are left out."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    models, modes = (None if m is None else set(m) for m in (models, modes))
    seeds = None if seeds is None else {int(s) for s in seeds}
    found = []
    for path in sorted(p for p in runs_dir.iterdir() if p.is_dir() and is_finished(p)):
        run = load_run(path)
        if ((models is None or run.model in models) and (modes is None or run.mode in modes)
                and (seeds is None or run.seed in seeds)):
            found.append(run)
    return sorted(found, key=lambda r: (r.model, r.mode, r.seed))


def check_one_dataset(runs: list[Run]) -> None:
    """Refuse runs that were trained on different data sets, profiles or image sizes."""
    if not runs:
        return
    first = runs[0]
    for run in runs[1:]:
        for key in SAME_IN_ONE_REPORT:
            if run.config.get(key) != first.config.get(key):
                raise UserError(
                    f"{run.path} and {first.path} differ in {key} ({run.config.get(key)!r} vs "
                    f"{first.config.get(key)!r}); one report reads runs of one data set and profile: "
                    "point runs_dir at a folder holding only those.")


def config_differences(saved: dict, wanted: dict) -> list[str]:
    """The keys whose values differ between a run's config.json and the config it would get."""
    return sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
