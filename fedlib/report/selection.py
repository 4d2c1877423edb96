"""Which runs (and which images) a report shows.

``runs_of``, ``by_model`` and ``missing_runs`` pick and name the runs of the reproduction's
figures and tables (``fedlib.run.results.find_runs``: one per model, mode and seed); ``select_runs``
and ``pick_images`` choose what the Grad-CAM++ figures and the localisation table explain.
A missing run is not an error: it is named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.resolve import Dataset
from ..errors import UserError
from ..models import MODEL_NAMES
from ..run import results
from ..run.results import Run
from ..train import derive_seed

FED, POOLED = "fedavg", "central"
MODES = (FED, POOLED)  # the paper's two rows: trained with FL, and without (pooled)


def runs_of(runs: Sequence[Run], mode: str, models: Sequence[str] | None = None) -> list[Run]:
    """The runs of one mode (and of ``models``), ordered by model (as listed) and seed."""
    order = list(models) if models is not None else list(MODEL_NAMES)
    chosen = [r for r in runs if r.mode == mode and (models is None or r.model in models)]
    return sorted(chosen, key=lambda r: (order.index(r.model) if r.model in order else len(order), r.model, r.seed))


def by_model(runs: Sequence[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.model, []).append(r)
    return out


def missing_runs(
    runs: Sequence[Run], models: Sequence[str] | None, modes: Sequence[str], seeds: Sequence[int] | None = None
) -> list[str]:
    """Expected runs without a finished run: ``<model>-<mode>`` when no seed has finished,
    else ``<model>-<mode> (seeds 1, 2)``."""
    if models is None:
        return []
    out = []
    for m in models:
        for mode in modes:
            got = {r.seed for r in runs if r.model == m and r.mode == mode}
            if not got:
                out.append(f"{m}-{mode}")
            elif seeds is not None and (lost := [str(s) for s in seeds if int(s) not in got]):
                out.append(f"{m}-{mode} (seed{'s' if len(lost) > 1 else ''} {', '.join(lost)})")
    return out


@dataclass
class Selection:
    """The runs one report explains: every chosen (model, mode, seed) that has finished."""

    runs: list[results.Run]  # in the order of ``models``, then ``modes``, then ``seeds``
    seeds: list[int]  # the training seeds asked for, or the first one found
    notes: list[str] = field(default_factory=list)  # one sentence per run that is missing

    @property
    def first_seed(self) -> int | None:
        return self.seeds[0] if self.seeds else None

    @property
    def figure_runs(self) -> dict:
        """{(model, mode): Run} of the first seed: the paper's figures show one training seed."""
        return {(r.model, r.mode): r for r in self.runs if r.seed == self.first_seed}

    @property
    def synthetic(self) -> bool:
        """Whether the runs' data have lesion masks (generated phantoms)."""
        return bool(self.runs) and all(r.final.get("synthetic", False) for r in self.runs)


def select_runs(
    runs_dir, models: Sequence[str], seeds: Sequence[int] | None = None, modes: Sequence[str] = MODES
) -> Selection:
    """The finished runs of ``models`` x ``modes`` x ``seeds`` in runs_dir.

    seeds None: the first (lowest) training seed found. Runs of several data
    sets, profiles or image sizes are refused (``results.check_one_dataset``).
    Two folders holding the same (model, mode, seed): the one named
    ``<model>-<mode>-seed<seed>`` wins, and a note says which was left out.
    """
    found = results.find_runs(runs_dir, models=models, modes=modes, seeds=seeds)
    if seeds is None:
        seeds = [min(r.seed for r in found)] if found else []
    seeds = [int(s) for s in seeds]
    notes: list[str] = []
    if not found:
        notes.append(
            f"no finished runs of {', '.join(models)} in {runs_dir}: nothing to explain; "
            "train them with `fedlib reproduce`."
        )
    groups: dict[tuple, list[results.Run]] = {}
    for run in found:
        groups.setdefault((run.model, run.mode, run.seed), []).append(run)
    ordered = []
    for name in models:
        for mode in modes:
            for seed in seeds:
                key = (name, mode, seed)
                if key not in groups:
                    if found:
                        notes.append(
                            f"{results.run_name(*key)} is not a finished run in {runs_dir}, so "
                            "its panels stay empty and it has no row in the table; train it "
                            "with `fedlib reproduce`."
                        )
                    continue
                group = groups[key]
                best = next((r for r in group if r.path.name == results.run_name(*key)), group[0])
                notes += [
                    f"{other.path} holds the same run as {best.path}; using {best.path}."
                    for other in group
                    if other is not best
                ]
                ordered.append(best)
    results.check_one_dataset(ordered)
    return Selection(ordered, seeds, notes)


def as_run(run) -> results.Run:
    return run if isinstance(run, results.Run) else results.load_run(run)


def split_arrays(data: Dataset, split: str):
    if split == "test":
        return data.test_images, data.test_labels, data.test_records
    if split == "train":
        return data.train_images, data.train_labels, data.train_records
    raise UserError(f"split {split!r} is not one of train, test; pass --split train or --split test.")


def pick_images(records, labels, seed: int, per_class: int = 1, filenames=None) -> list[int]:
    """Indices into the split: the given file names in their order, or else
    ``per_class`` images of every class present, drawn from ``seed``, by class index."""
    if filenames:
        index = {r.filename: i for i, r in enumerate(records)}
        for name in filenames:
            if name not in index:
                example = f" (e.g. {records[0].filename})" if records else ""
                raise UserError(
                    f"image {name!r} is not in this split; pass a file name as its split file lists it{example}."
                )
        return [index[name] for name in filenames]
    if per_class < 1:
        raise UserError(f"per_class must be at least 1, got {per_class}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(derive_seed(seed, "gradcam-images"))
    picked = []
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        picked += sorted(int(i) for i in rng.choice(pool, size=min(per_class, len(pool)), replace=False))
    return picked
