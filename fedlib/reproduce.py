"""``fedlib reproduce``: execute every notebook in order with papermill.

00_data, then 01_train once per (model, mode, seed), then 02_loss_curves,
03_accuracy and 04_gradcam (when that notebook exists). Each executed copy is
kept in the reports folder: it is written under a temporary name and renamed
when it succeeds, or renamed to ``<name>.failed.ipynb`` when it fails, so a
report on disk is always a complete run of its notebook.

Runs of different data sets live apart: the default runs folder is
``runs/<profile>/<data tag>``, e.g. ``runs/quick/synthetic-1a2b3c4d``; the profile's
own synthetic set draws into ``figures/`` and ``reports/<profile>/`` (what the
repository commits), any other data set into folders named after it
(``fedlib.run.folder``, which names every run folder).

A run folder is reused only when its ``config.json`` is the config it would be
trained with, data fingerprint included (the hardware aside,
``run.folder.config_differences``): a finished run is skipped, an unfinished one is
resumed from its last checkpoint, and one with another config stops the reproduction
before any notebook runs (``force`` retrains it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from . import config
from .errors import UserError
from .notebook import KERNEL, Job, execute, execute_all
from .run.folder import (
    RUN_KEYS,
    DataSet,
    config_differences,
    data_set,
    is_finished,
    is_profile_synthetic,
    reproduce_paths,
    run_config,
    run_name,
    wanted_config,
)
from .run.results import load_run

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
__all__ = ["KERNEL", "Reproduction", "execute", "plan", "reproduce"]
DEFAULT_MODES = ("fedavg", "central")  # FedAvg and its pooled reference: what the paper's tables compare
# Seeds per profile when none are given: a claim stands on 3 seeds (quick); paper and smoke train one.
PROFILE_SEEDS = {"quick": (0, 1, 2)}
# Training notebooks at once per profile when not given (otherwise one at a time). With more than
# one, each kernel gets an equal share of the CPU's cores as torch threads: quick is sized for 2
# cores, where two one-thread kernels train faster than one two-thread kernel (fedlib.notebook).
PROFILE_JOBS = {"quick": 2}
EPSILON = 0.05  # tolerance on |V_FED - V_SUM| that 03_accuracy reports against
# Set per run by the reproduction itself; not accepted in ``overrides``.
PER_RUN_KEYS = ("profile", *RUN_KEYS)


def changed_keys(run_dir, wanted: dict) -> list[str]:
    """``config_differences`` between ``run_dir``'s config.json and ``wanted``; [] when there is
    no config.json. An unreadable config.json or final.json is a UserError (``load_run``)."""
    if not (Path(run_dir) / "config.json").is_file():
        return []
    return config_differences(load_run(run_dir, finished=False).config, wanted)


def _value(v) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


def mismatch_message(run_dir, keys: Sequence[str], wanted: dict, others: int = 0) -> str:
    """The one sentence that stops a reproduction at a run trained with another config."""
    saved = load_run(run_dir, finished=False).config
    shown = "; ".join(f"{k}: {_value(saved.get(k))} in the run, {_value(wanted.get(k))} now" for k in keys[:4])
    if len(keys) > 4:
        shown += f"; and {len(keys) - 4} more key(s)"
    also = f", and so were {others} more run(s) in {Path(run_dir).parent}" if others else ""
    return (
        f"{run_dir} was trained with another config than this reproduction asks for ({shown}){also}; "
        f"pass --force to retrain {'them' if others else 'it'}, or --runs-dir to reproduce into another folder."
    )


def decide(run_dir, wanted: dict, *, force: bool = False) -> str:
    """What to do with one run folder: "train" (nothing there yet), "reuse" (finished with
    this config), "resume" (unfinished, this config) or "retrain" (``force``, something there).
    A run with another config is a UserError."""
    run_dir = Path(run_dir)
    there = run_dir.is_dir() and any(run_dir.iterdir())
    if force:
        return "retrain" if there else "train"
    if not (run_dir / "config.json").is_file():
        return "train"
    keys = changed_keys(run_dir, wanted)
    if keys:
        raise UserError(mismatch_message(run_dir, keys, wanted))
    return "reuse" if is_finished(run_dir) else "resume"


@dataclass(frozen=True)
class Reproduction:
    """What one reproduction trains and draws; ``reproduce`` and ``plan`` take it, or its
    fields as keywords.

    ``seeds`` trains every (model, mode) once per seed (``seed`` is the shorthand for one;
    default ``PROFILE_SEEDS``, else 0); ``models`` defaults to the paper's, ``modes`` to
    ``DEFAULT_MODES``. ``jobs`` training notebooks run at once (default ``PROFILE_JOBS``, else
    1), each kernel with ``threads`` torch threads (default: an equal share of the cores when
    ``jobs`` > 1, torch's own count otherwise).
    ``overrides`` are extra TrainConfig fields for every run and for 00_data: the COVIDx
    layout (``train_split``...), ``val_fraction``, ``class_weight``, ``pooled_budget``,
    ``parallel_clients``, ``compile``; the tests send generated data to a temporary folder
    with ``{"data_dir": ...}``. ``runs_dir``, ``figures_dir`` and ``reports_dir`` are used as
    given; None picks the defaults of ``fedlib.run.folder.reproduce_paths``. Relative paths
    are taken from the current folder, where the notebooks run too.
    """

    profile: str = "quick"
    data: str = "synthetic"
    models: Sequence[str] | None = None
    modes: Sequence[str] | None = None
    seeds: Sequence[int] | None = None
    force: bool = False
    runs_dir: str | Path | None = None
    figures_dir: str | Path | None = None
    reports_dir: str | Path | None = None
    device: str = "auto"
    progress: bool = True
    overrides: dict | None = None
    notebooks_dir: str | Path = NOTEBOOKS_DIR
    seed: int | None = None
    jobs: int | None = None
    threads: int | None = None

    def run_parameters(self, model: str | None = None, mode: str | None = None, seed: int | None = None) -> dict:
        """What ``run.folder.run_config`` resolves one run's config from (as 01_train's parameters);
        None: the profile's model and mode, the first seed."""
        return {
            "profile": self.profile,
            "model": model,
            "mode": mode,
            "data": self.data,
            "seed": self.seeds[0] if seed is None else seed,
            "device": self.device,
            "overrides": dict(self.overrides or {}),
        }

    def checked(self) -> Reproduction:
        """This reproduction with its defaults filled in (models, modes, seeds; the folders stay
        as given), checked: bad seeds or overrides, a config that does not resolve (every run's
        is resolved, so a typo fails in a second) or no notebooks are a UserError."""
        from .models import PAPER_MODELS

        if self.seeds is not None and self.seed is not None:
            raise UserError("pass seeds or seed, not both (seed N is the shorthand for seeds [N]).")
        if self.seeds is not None:
            seeds = [int(s) for s in self.seeds]
        else:
            seeds = [self.seed] if self.seed is not None else list(PROFILE_SEEDS.get(self.profile, (0,)))
        check_seeds(seeds)
        jobs = self.jobs if self.jobs is not None else PROFILE_JOBS.get(self.profile, 1)
        threads = self.threads
        if threads is None and isinstance(jobs, int) and jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // jobs)
        for name, value in (("--jobs", jobs), ("--threads", threads)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"{name} must be an integer of at least 1, got {value!r}.")
        check_folders(runs_dir=self.runs_dir, figures_dir=self.figures_dir, reports_dir=self.reports_dir)
        reserved = sorted(set(self.overrides or {}) & set(PER_RUN_KEYS))
        if reserved:
            raise UserError(
                f"overrides may not set {', '.join(reserved)}; pass them as the reproduction's own "
                "arguments (profile, data, models, modes, seeds, device)."
            )
        spec = replace(
            self,
            models=list(self.models) if self.models else list(PAPER_MODELS),
            modes=list(self.modes) if self.modes else list(DEFAULT_MODES),
            seeds=seeds,
            seed=None,
            jobs=jobs,
            threads=threads,
            overrides=dict(self.overrides or {}),
            notebooks_dir=Path(self.notebooks_dir),
        )
        for seed in seeds:
            for model in spec.models:
                for mode in spec.modes:
                    run_config(spec.run_parameters(model, mode, seed))
        if not (spec.notebooks_dir / "00_data.ipynb").is_file():
            raise UserError(
                f"no notebooks in {spec.notebooks_dir}; run `fedlib reproduce` from a checkout of the repository."
            )
        return spec


def check_folders(**folders) -> None:
    """Refuse, before any work, an output folder option (``runs_dir=...``) that names a file or
    lies inside one; None is the default folder."""
    for name, value in folders.items():
        if value is None:
            continue
        path = Path(value)
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            flag = f"--{name.replace('_', '-')}"
            raise UserError(f"{flag} {path}: {blocker} is a file, not a folder; choose another {flag}.")


def check_seeds(seeds) -> None:
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds must be one or more distinct non-negative integers, got {seeds}.")


def check_study_options(seeds, *, runs_dir, figures_dir, report) -> None:
    """``fedlib study``'s options, before the data set is made or a run trained."""
    check_seeds(seeds)
    check_folders(runs_dir=runs_dir, figures_dir=figures_dir)
    if report is not None:
        check_folders(report=Path(report).parent)
        if Path(report).suffix != ".ipynb" or Path(report).is_dir():
            raise UserError(f"--report {report} must name a notebook file (.ipynb); choose another --report.")


def _spec(spec: Reproduction | None, fields: dict) -> Reproduction:
    if spec is not None and fields:
        raise TypeError("pass a Reproduction or its fields as keywords, not both")
    return spec if spec is not None else Reproduction(**fields)


@dataclass
class Step:
    notebook: str  # file stem in notebooks/, e.g. "01_train"
    report: str  # file stem of the executed copy, e.g. "01_train-resnet18-fedavg-seed0"
    parameters: dict  # what papermill injects; each name is declared in the notebook's parameters cell
    run_dir: Path | None = None  # training steps: the run directory they fill


def plan(spec: Reproduction | None = None, /, **fields) -> list[Step]:
    """The notebooks to execute, in order, with their parameters, for ``spec`` (its models,
    modes, seeds, runs_dir and figures_dir given; or its fields as keywords).

    Training runs seed by seed (every model and mode of one seed, then the next), into
    ``<runs_dir>/<model>-<mode>-seed<seed>``; ``overrides`` (layout, training options)
    reach 00_data and every run alike.
    """
    spec = _spec(spec, fields)
    runs_dir, figures_dir, overrides = spec.runs_dir, spec.figures_dir, spec.overrides or {}
    seeds = [int(s) for s in spec.seeds]
    analysis = {"runs_dir": str(runs_dir), "figures_dir": str(figures_dir), "models": list(spec.models), "seeds": seeds}
    steps = [
        Step(
            "00_data",
            "00_data",
            {
                "figures_dir": str(figures_dir),
                "profile": spec.profile,
                "data": spec.data,
                "seed": seeds[0],
                "overrides": dict(overrides),
            },
        )
    ]
    for seed in seeds:
        for model in spec.models:
            for mode in spec.modes:
                name = run_name(model, mode, seed)
                out = Path(runs_dir) / name
                steps.append(
                    Step(
                        "01_train",
                        f"01_train-{name}",
                        {
                            "model": model,
                            "mode": mode,
                            "profile": spec.profile,
                            "data": spec.data,
                            "out": str(out),
                            "seed": seed,
                            "device": spec.device,
                            "force": spec.force,
                            "overrides": dict(overrides),
                        },
                        run_dir=out,
                    )
                )
    steps.append(Step("02_loss_curves", "02_loss_curves", dict(analysis)))
    steps.append(Step("03_accuracy", "03_accuracy", {**analysis, "epsilon": EPSILON}))
    if (Path(spec.notebooks_dir) / "04_gradcam.ipynb").is_file():
        steps.append(Step("04_gradcam", "04_gradcam", dict(analysis)))
    return steps


def decide_all(steps: Sequence[Step], dataset: DataSet, *, force: bool = False) -> dict[Path, str]:
    """``decide`` for the run folder of each training step, before any notebook runs: runs
    trained with another config stop the reproduction here, with nothing written, in one
    sentence that names the first and counts the others."""
    actions, mismatched = {}, []
    for step in steps:
        if step.run_dir is None:
            continue
        wanted = wanted_config(run_config(step.parameters), dataset)
        keys = [] if force else changed_keys(step.run_dir, wanted)
        if keys:
            mismatched.append((step.run_dir, keys, wanted))
        else:
            actions[step.run_dir] = decide(step.run_dir, wanted, force=force)
    if mismatched:
        run_dir, keys, wanted = mismatched[0]
        raise UserError(mismatch_message(run_dir, keys, wanted, others=len(mismatched) - 1))
    return actions


def ensure_run(cfg: config.TrainConfig, out: str | Path, *, force: bool = False, progress: bool = True) -> dict:
    """Train one run into ``out`` unless it has finished with this config; returns final.json's content.

    A finished run with this config (data fingerprint included) is read back; an
    unfinished one is resumed from its last checkpoint; one with another config is a
    UserError. ``force`` retrains from scratch whatever is there.
    """
    from .launch import run

    out = Path(out)
    action = decide(out, wanted_config(cfg, data_set(cfg, progress)), force=force)
    if action == "reuse":
        print(f"{out} has finished with this config (final.json exists): not retraining; pass force=True to retrain.")
        return load_run(out).final
    resume = action == "resume"
    if resume:
        print(f"{out} has this config but no final.json: resuming from its last checkpoint.")
    overwrite = not resume and out.is_dir() and any(out.iterdir())
    return run(cfg, out, resume=resume, overwrite=overwrite, progress=progress)


def reproduce(spec: Reproduction | None = None, /, **fields) -> dict:
    """Execute the notebooks in order: train what is missing, then draw every figure and table.

    ``spec`` says what (a ``Reproduction``, or its fields as keywords:
    ``reproduce(profile="smoke", seeds=[0, 1])``). Returns the executed reports, the
    skipped runs and the folders used.
    """
    spec = _spec(spec, fields).checked()
    base = run_config(spec.run_parameters())
    dataset = data_set(base, spec.progress)
    default = reproduce_paths(spec.profile, dataset, is_profile_synthetic(base))
    spec = replace(
        spec,
        runs_dir=Path(spec.runs_dir) if spec.runs_dir is not None else default.runs,
        figures_dir=Path(spec.figures_dir) if spec.figures_dir is not None else default.figures,
        reports_dir=Path(spec.reports_dir) if spec.reports_dir is not None else default.reports,
    )
    steps = plan(spec)
    actions = decide_all(steps, dataset, force=spec.force)

    print(f"data set: {dataset.tag} ({dataset.root}, fingerprint {dataset.fingerprint})")
    print(f"runs: {spec.runs_dir}/  figures: {spec.figures_dir}/  executed notebooks: {spec.reports_dir}/", flush=True)
    executed, skipped, training = [], [], []
    for i, step in enumerate(steps, 1):
        action = actions.get(step.run_dir)
        if action == "reuse":
            print(
                f"[{i}/{len(steps)}] skip {step.report}: {step.run_dir} has finished with this config "
                "(--force retrains)"
            )
            skipped.append(step.run_dir)
            continue
        note = {"resume": f" (resuming {step.run_dir})", "retrain": f" (retraining {step.run_dir})"}.get(action, "")
        job = Job(
            spec.notebooks_dir / f"{step.notebook}.ipynb",
            spec.reports_dir / f"{step.report}.ipynb",
            step.parameters,
            step.run_dir,
            f"[{i}/{len(steps)}] {step.report}{note}",
        )
        if step.run_dir is not None:  # training: run together, before the next notebook that draws
            training.append(job)
            continue
        executed += execute_all(training, spec.jobs, progress=spec.progress, threads=spec.threads)
        training = []
        executed += execute_all([job], 1, progress=spec.progress)
    executed += execute_all(training, spec.jobs, progress=spec.progress, threads=spec.threads)
    print(f"data set:           {dataset.tag} ({dataset.root})")
    print(f"figures and tables: {spec.figures_dir}/")
    print(f"executed notebooks: {spec.reports_dir}/")
    print(f"run directories:    {spec.runs_dir}/")
    return {
        "executed": executed,
        "skipped": skipped,
        "figures_dir": spec.figures_dir,
        "reports_dir": spec.reports_dir,
        "runs_dir": spec.runs_dir,
        "data_set": dataset,
    }
