"""Run folders as data: how to read them back (config, history, final metrics,
per-client rows, the trained model).

``fedlib reproduce`` writes ``<runs_dir>/<model>-<mode>-seed<seed>/`` (``fedlib.run.folder``); plots,
Grad-CAM++ and the notebooks read them through ``find_runs`` and ``load_run``
(``finished=False`` also opens a run that is still training). A set of runs
that mixes data sets or profiles cannot be drawn into one figure:
``check_one_dataset`` refuses it with one sentence naming the odd run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
from torch import nn

from ..config import TrainConfig, from_dict
from ..errors import UserError, bounded
from ..metrics import at_chance, chance_level, slug, summarize_confusion
from ..models import build_model
from ..train import pick_hardware
from .folder import is_finished, run_name
from .io import load_checkpoint, read_json

# What must agree between runs drawn into one figure or table: the data (and the part of
# it trained and tested on), the profile and the image size.
SAME_IN_ONE_REPORT = ("data_fingerprint", "profile", "image_size", "subset", "test_subset")

# The tables give, beside the last evaluation's test accuracy (one noisy point: one run
# went 0.84 -> 0.50 between its last two rounds), the mean over this many last evaluations.
LAST_EVALS = 3


@dataclass
class Run:
    """One run folder, read back: config.json and final.json as dicts (final is {} while the
    run trains), history.csv and clients.csv as data frames (read once, on first use)."""

    path: Path
    config: dict  # config.json
    final: dict  # final.json; {} for an unfinished run

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def mode(self) -> str:
        return self.config["mode"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def finished(self) -> bool:
        return is_finished(self.path)

    @cached_property
    def history(self) -> pd.DataFrame:
        """history.csv: one row per round (federated) or epoch (pooled, local); empty when absent."""
        return _read_csv(self.path / "history.csv")

    @cached_property
    def clients(self) -> pd.DataFrame:
        """clients.csv, one row per client and attempt of a round: round, attempt, client, status
        ("used" or "dropped"), reason, num_examples, train_loss and any per-client metric
        (e.g. epsilon); empty when absent (pooled runs, runs of an older fedlib)."""
        return _read_csv(self.path / "clients.csv")

    @cached_property
    def train_config(self) -> TrainConfig:
        """config.json as the TrainConfig the run was trained with."""
        return TrainConfig(**from_dict(self.config, source=str(self.path / "config.json")))

    def load_model(self, device: str = "cpu") -> nn.Module:
        """The model of the last checkpoint (the final model of a finished run) in eval mode, on
        ``device`` (auto, cpu, cuda, as ``--device``). Local-only runs, one model per client, have none."""
        if self.mode == "local":
            raise UserError(
                f"{self.path} is a local-only run with one model per client; explain a fedavg or central run instead."
            )
        checkpoint = load_checkpoint(self.path)
        if checkpoint is None:
            raise UserError(f"{self.path} has no checkpoints/last.pt; train it again with --overwrite.")
        cfg = self.train_config
        # Runs of fedlib before covidnet_grid existed flattened COVID-Net's head at 7x7 at any size.
        grid = cfg.head_grid if "covidnet_grid" in self.config else 7
        model = build_model(cfg.model, len(self.final.get("classes", (0, 1, 2))), cfg.model_norm, grid)
        model.load_state_dict(checkpoint["model"])
        return model.to(pick_hardware(device).device).eval()


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def load_run(run_dir, finished: bool = True) -> Run:
    """The run in ``run_dir``. A folder without final.json is a UserError, unless ``finished``
    is False: a run still training (or stopped) opens with its config and history so far."""
    run_dir = Path(run_dir)
    if finished and not is_finished(run_dir):
        raise UserError(
            f"{run_dir} holds no finished run (no final.json); train it first "
            f"(`fedlib train --out {run_dir}` or `fedlib reproduce`)."
        )
    if not (run_dir / "config.json").is_file():
        raise UserError(
            f"{run_dir} holds no run (no config.json); train it first "
            f"(`fedlib train --out {run_dir}` or `fedlib reproduce`)."
        )
    try:
        config = read_json(run_dir / "config.json")
        final = read_json(run_dir / "final.json") if (run_dir / "final.json").is_file() else {}
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{run_dir} has an unreadable config.json or final.json ({exc}); "
            "train it again with --overwrite (--force in `fedlib reproduce`)."
        ) from None
    if not isinstance(config, dict) or not isinstance(final, dict):
        raise UserError(
            f"{run_dir} has a config.json or final.json that is not a mapping; "
            "train it again with --overwrite (--force in `fedlib reproduce`)."
        )
    return Run(run_dir, config, final)


def find_runs(
    runs_dir,
    models: Iterable[str] | None = None,
    modes: Iterable[str] | None = None,
    seeds: Iterable[int] | None = None,
) -> list[Run]:
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
        if (
            (models is None or run.model in models)
            and (modes is None or run.mode in modes)
            and (seeds is None or run.seed in seeds)
        ):
            found.append(run)
    return sorted(found, key=lambda r: (r.model, r.mode, r.seed))


def require_runs(runs: list[Run], runs_dir) -> None:
    """Refuse an empty report: an analysis notebook that finds no finished run (a mistyped
    ``runs_dir``) stops here, before it replaces a figure or table with an empty one."""
    if not runs:
        where = "does not exist" if not Path(runs_dir).is_dir() else "holds no finished run of these models and seeds"
        raise UserError(
            f"runs_dir {bounded(runs_dir)} {where}; nothing was written. Point runs_dir at the folder "
            "`fedlib reproduce` trained into (runs/<profile>/<data tag>)."
        )


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
                    "point runs_dir at a folder holding only those."
                )


def check_unique(runs: list[Run]) -> None:
    """Refuse two finished runs of the same (model, mode, seed), e.g. an old ``<model>-<mode>``
    folder beside its ``<model>-<mode>-seed<seed>`` successor: a table would count it twice."""
    seen: dict[tuple, Run] = {}
    for run in runs:
        key = (run.model, run.mode, run.seed)
        if key in seen:
            raise UserError(
                f"{run.path} and {seen[key].path} are both {run_name(*key)}; one report reads "
                "one run per model, mode and seed: move one of them out of runs_dir."
            )
        seen[key] = run


def last_evals_accuracy(history: pd.DataFrame, k: int = LAST_EVALS, split: str = "test") -> float:
    """Mean accuracy over the last ``k`` evaluated rows of history.csv (rows without an
    evaluation, with eval_every > 1, are skipped); NaN without any."""
    column = f"{split}_accuracy"
    if column not in history:
        return float("nan")
    evaluated = history[column].dropna()
    return float(evaluated.tail(k).mean()) if len(evaluated) else float("nan")


def sample_passes(run: Run) -> float:
    """Training images processed in all (an image seen in two epochs counts twice): the last
    row of history.csv, else final.json's total; NaN when neither says."""
    h = run.history
    if "sample_passes" in h and h["sample_passes"].notna().any():
        return float(h["sample_passes"].dropna().iloc[-1])
    return _number(run.final.get("sample_passes"))


def pooled_budget_rule(config: dict) -> str:
    """How many epochs pooled training got, in words: the rule of ``config.pooled_budget``, or
    the fixed ``central_epochs`` that overrides it (the quick profile sets 8)."""
    rounds, epochs = int(config.get("rounds", 100)), int(config.get("local_epochs", 3))
    clients = int(config.get("clients", 5))
    per_round = max(int(float(config.get("fraction", 0.4)) * clients), 1)
    if config.get("central_epochs") is not None:
        return f"fixed ({config['central_epochs']} epochs, central_epochs)"
    if config.get("pooled_budget", "paper") == "matched":
        n = math.ceil(rounds * epochs * per_round / clients)
        return f"matched (FedAvg's sample passes: R x E x C = {n} epochs)"
    return f"paper (R x E = {rounds * epochs} epochs)"


def run_metrics(run: Run) -> dict:
    """One flat row of a run's numbers, as the tables read them: final.json's train and test
    metrics (balanced accuracy recomputed from the confusion matrix for runs that predate it),
    the mean test accuracy over the last ``LAST_EVALS`` evaluations, whether the run is at
    chance (``fedlib.metrics.CHANCE_MARGIN``), its sample passes and (pooled) budget rule."""
    classes = list(run.final.get("classes", []))
    row = {"model": run.model, "mode": run.mode, "seed": run.seed, "params": run.final.get("params")}
    for split in ("train", "test"):
        m = dict(run.final.get(split, {}))
        if "confusion" in m and classes:
            m = {**summarize_confusion(m["confusion"], tuple(classes)), **m}
        row[f"{split}_accuracy"] = _number(m.get("accuracy"))
        row[f"{split}_balanced_accuracy"] = _number(m.get("balanced_accuracy"))
        for c in classes:
            row[f"{split}_sensitivity_{slug(c)}"] = _number(m.get(f"sensitivity_{slug(c)}"))
    test = run.final.get("test", {})
    chance = chance_level(test["confusion"]) if "confusion" in test else (1 / len(classes) if classes else float("nan"))
    row[f"test_accuracy_last{LAST_EVALS}"] = last_evals_accuracy(run.history)
    row["chance_level"] = chance
    row["at_chance"] = at_chance(row["test_balanced_accuracy"], chance)
    row["sample_passes"] = sample_passes(run)
    row["pooled_budget"] = pooled_budget_rule(run.config) if run.mode == "central" else None
    return row


def _number(value) -> float:
    return float("nan") if value is None else float(value)  # write_json stores NaN as null


def metrics_table(runs: list[Run]) -> pd.DataFrame:
    """``run_metrics`` of each run, one row per run (in the order given)."""
    return pd.DataFrame([run_metrics(r) for r in runs])
