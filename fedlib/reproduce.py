"""``fedlib reproduce``: execute every notebook in order with papermill.

00_data, then 01_train once per (model, mode, seed), then 02_loss_curves,
03_accuracy and 04_gradcam (when that notebook exists). Each executed copy is
kept in the reports folder: it is written under a temporary name and renamed
when it succeeds, or renamed to ``<name>.failed.ipynb`` when it fails, so a
report on disk is always a complete run of its notebook.

Runs of different data sets live apart: the default runs folder is
``runs/<profile>/<data tag>``, the tag being the data set's name and the first
8 characters of its fingerprint (``fedlib.data.identity``), e.g.
``runs/quick/synthetic-1a2b3c4d``. The profile's own synthetic set draws into
``figures/`` and ``reports/<profile>/`` (what the repository commits); any other
data set into ``figures/<profile>-<data tag>/`` and ``reports/<profile>-<data tag>/``.

A run folder is reused only when its ``config.json`` is the config it would be
trained with, data fingerprint included (the hardware aside): a finished run is
skipped, an unfinished one is resumed from its last checkpoint, and one with
another config stops the reproduction before any notebook runs (``force``
retrains it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import config, results, runs
from .errors import UserError

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "fedlib"  # registered by `make setup` (python -m ipykernel install --sys-prefix --name fedlib)
DEFAULT_MODES = ("fedavg", "central")  # FedAvg and its pooled reference: what the paper's tables compare
EPSILON = 0.05  # tolerance on |V_FED - V_SUM| that 03_accuracy reports against
# Config keys a run may change between training and reuse, as on --resume: they say where
# it ran, not what it learned.
HARDWARE_KEYS = ("device", "amp", "channels_last", "parallel_clients")
# Where the data are, not what they are: when both configs carry the same fingerprint,
# a moved checkout or data folder still reuses its runs.
LOCATION_KEYS = ("data", "data_dir")
# Set per run by the reproduction itself; not accepted in ``overrides``.
PER_RUN_KEYS = ("profile", "data", "model", "mode", "seed", "device")


@dataclass(frozen=True)
class DataSet:
    """The data set a reproduction trains on: where it is and what it is."""

    root: Path
    fingerprint: str  # fedlib.data.identity.fingerprint, as the runs record it
    name: str  # "synthetic", or the folder's name

    @property
    def tag(self) -> str:
        """The folder name for its runs: ``<name>-<fingerprint[:8]>``."""
        return f"{self.name}-{self.fingerprint[:8]}"


def data_set(cfg: config.TrainConfig, progress: bool = True) -> DataSet:
    """The data set ``cfg`` trains on (generating the synthetic one on first use), checked
    as training would read it, with the fingerprint a run records."""
    from .data.covidx import Layout, read_split
    from .data.identity import fingerprint
    from .data.resolve import ensure_data_root

    root = ensure_data_root(cfg, progress)
    layout = cfg.layout if cfg.data != "synthetic" else Layout()
    for split in ("train", "test"):
        read_split(root, split, layout)  # a wrong --train-split or a partial download: one sentence here
    name = "synthetic" if cfg.data == "synthetic" else re.sub(r"[^A-Za-z0-9._-]+", "_", root.resolve().name)
    return DataSet(root, fingerprint(root, layout), name)


def wanted_config(cfg: config.TrainConfig, data: DataSet) -> dict:
    """config.json as ``cfg`` would record it: absolute data paths and the data's fingerprint."""
    cfg = dataclasses.replace(config.absolute_paths(cfg), data_fingerprint=data.fingerprint)
    return json.loads(json.dumps(config.to_dict(cfg)))  # as JSON has it (tuples as lists)


def default_runs_dir(profile: str, data: DataSet) -> Path:
    return Path("runs") / profile / data.tag


def default_run_dir(cfg: config.TrainConfig, progress: bool = True) -> Path:
    """Where ``fedlib reproduce`` trains ``cfg``: ``runs/<profile>/<data tag>/<model>-<mode>-seed<seed>``."""
    return default_runs_dir(cfg.profile, data_set(cfg, progress)) / results.run_name(cfg.model, cfg.mode, cfg.seed)


def is_profile_synthetic(cfg: config.TrainConfig) -> bool:
    """True for the synthetic set the profile generates by default (what figures/ shows)."""
    if cfg.data != "synthetic":
        return False
    default = config.resolve(cfg.profile, None)
    return all(
        getattr(cfg, f.name) == getattr(default, f.name) for f in dataclasses.fields(cfg) if f.name.startswith("synth_")
    )


def output_dirs(profile: str, data: DataSet, profile_synthetic: bool) -> tuple[Path, Path]:
    """Default (figures, reports) folders: the profile's synthetic set keeps ``figures/`` and
    ``reports/<profile>/``; another data set gets ``<dir>/<profile>-<data tag>/`` in both."""
    if profile_synthetic:
        return Path("figures"), Path("reports") / profile
    label = f"{profile}-{data.tag}"
    return Path("figures") / label, Path("reports") / label


def config_differences(run_dir, wanted: dict) -> list[str]:
    """Keys in which ``run_dir``'s config.json differs from ``wanted`` (the hardware aside);
    [] when they agree or when there is no config.json."""
    if not (Path(run_dir) / "config.json").is_file():
        return []
    saved = results.load_run(run_dir, finished=False).config
    ignored = set(HARDWARE_KEYS)
    if saved.get("data_fingerprint") is not None and saved.get("data_fingerprint") == wanted.get("data_fingerprint"):
        ignored |= set(LOCATION_KEYS)
    return [k for k in results.config_differences(saved, wanted) if k not in ignored]


def _value(v) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


def mismatch_message(run_dir, keys: Sequence[str], wanted: dict, others: int = 0) -> str:
    """The one sentence that stops a reproduction at a run trained with another config."""
    saved = results.load_run(run_dir, finished=False).config
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
    keys = config_differences(run_dir, wanted)
    if keys:
        raise UserError(mismatch_message(run_dir, keys, wanted))
    return "reuse" if results.is_finished(run_dir) else "resume"


@dataclass
class Step:
    notebook: str  # file stem in notebooks/, e.g. "01_train"
    report: str  # file stem of the executed copy, e.g. "01_train-resnet18-fedavg-seed0"
    parameters: dict  # what papermill injects; each name is declared in the notebook's parameters cell
    run_dir: Path | None = None  # training steps: the run directory they fill


def plan(
    *,
    profile: str,
    data: str,
    models: Sequence[str],
    modes: Sequence[str],
    seeds: Sequence[int],
    runs_dir: str | Path,
    figures_dir: str | Path,
    device: str,
    force: bool,
    overrides: dict,
    notebooks_dir: Path = NOTEBOOKS_DIR,
) -> list[Step]:
    """The notebooks to execute, in order, with their parameters.

    Training runs seed by seed (every model and mode of one seed, then the next), into
    ``<runs_dir>/<model>-<mode>-seed<seed>``; ``overrides`` (layout, training options)
    reach 00_data and every run alike.
    """
    seeds = [int(s) for s in seeds]
    analysis = {"runs_dir": str(runs_dir), "figures_dir": str(figures_dir), "models": list(models), "seeds": seeds}
    steps = [
        Step(
            "00_data",
            "00_data",
            {
                "figures_dir": str(figures_dir),
                "profile": profile,
                "data": data,
                "seed": seeds[0],
                "overrides": dict(overrides),
            },
        )
    ]
    for seed in seeds:
        for model in models:
            for mode in modes:
                name = results.run_name(model, mode, seed)
                out = Path(runs_dir) / name
                steps.append(
                    Step(
                        "01_train",
                        f"01_train-{name}",
                        {
                            "model": model,
                            "mode": mode,
                            "profile": profile,
                            "data": data,
                            "out": str(out),
                            "seed": seed,
                            "device": device,
                            "force": force,
                            "overrides": dict(overrides),
                        },
                        run_dir=out,
                    )
                )
    steps.append(Step("02_loss_curves", "02_loss_curves", dict(analysis)))
    steps.append(Step("03_accuracy", "03_accuracy", {**analysis, "epsilon": EPSILON}))
    if (Path(notebooks_dir) / "04_gradcam.ipynb").is_file():
        steps.append(Step("04_gradcam", "04_gradcam", dict(analysis)))
    return steps


def run_config(parameters: dict) -> config.TrainConfig:
    """The config 01_train resolves from its parameters (the notebook makes the same call)."""
    p = parameters
    return config.resolve(
        p["profile"],
        None,
        model=p["model"],
        mode=p["mode"],
        data=p["data"],
        seed=p["seed"],
        device=p["device"],
        **p["overrides"],
    )


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
        return results.load_run(out).final
    resume = action == "resume"
    if resume:
        print(f"{out} has this config but no final.json: resuming from its last checkpoint.")
    overwrite = not resume and out.is_dir() and any(out.iterdir())
    return run(cfg, out, resume=resume, overwrite=overwrite, progress=progress)


def _show(line: str) -> None:
    tqdm.write(f"    {line}")  # above papermill's cell counter, which tqdm redraws below


def execute(
    notebook: Path, report: Path, parameters: dict, *, progress: bool = True, run_dir: Path | None = None
) -> Path:
    """Run one notebook with papermill into ``report`` (atomically); failures raise UserError.
    With ``run_dir`` (a training notebook's run) and ``progress``, its status lines are shown
    as it trains (``watch_progress``): papermill shows only its cell counter."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    report.parent.mkdir(parents=True, exist_ok=True)
    running = report.with_name(f".{report.stem}.running.ipynb")
    failed = report.with_name(f"{report.stem}.failed.ipynb")
    watching = runs.watch_progress(run_dir, _show) if progress and run_dir is not None else nullcontext()
    try:
        with watching:
            pm.execute_notebook(
                str(notebook),
                str(running),
                parameters=parameters,
                kernel_name=KERNEL,
                progress_bar=progress,
                log_output=False,
                cwd=os.getcwd(),
                # the kernel's own start-up warnings would interleave with our progress
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
    except PapermillExecutionError as err:
        os.replace(running, failed)
        lines = [line.strip() for line in err.source.splitlines() if line.strip()]
        # The line that names the cell: the first that is not a magic, an import or a comment.
        shown = next(
            (ln for ln in lines if not ln.startswith(("%", "#", "import ", "from "))), lines[0] if lines else ""
        )
        raise UserError(
            f"notebook {notebook.name} failed in cell index {err.cell_index} (In [{err.exec_count}]: {shown!r}) "
            f"with {err.ename}: {err.evalue.rstrip('.')}; the executed notebook is kept at {failed}."
        ) from None
    except Exception as err:  # the kernel died, is not registered, timed out, ...
        kept = ""
        if running.exists():
            os.replace(running, failed)
            kept = f" The partly executed notebook is kept at {failed}."
        hint = (
            " Register the kernel with `make setup` (python -m ipykernel install --sys-prefix --name fedlib)."
            if "kernel" in str(err).lower()
            else ""
        )
        raise UserError(f"notebook {notebook.name} could not run ({type(err).__name__}: {err}).{kept}{hint}") from None
    except BaseException:  # Ctrl-C: keep what ran, under the failed name
        if running.exists():
            os.replace(running, failed)
        raise
    os.replace(running, report)
    failed.unlink(missing_ok=True)
    return report


def reproduce(
    profile: str = "quick",
    data: str = "synthetic",
    models: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    force: bool = False,
    runs_dir: str | Path | None = None,
    figures_dir: str | Path | None = None,
    reports_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    overrides: dict | None = None,
    notebooks_dir: str | Path = NOTEBOOKS_DIR,
    seed: int | None = None,
) -> dict:
    """Execute the notebooks in order: train what is missing, then draw every figure and table.

    Relative paths are taken from the current folder, where the notebooks run too.
    ``seeds`` trains every (model, mode) once per seed (``seed`` is the shorthand for one;
    default 0). ``overrides`` are extra TrainConfig fields for every run and for 00_data:
    the COVIDx layout (``train_split``...), ``val_fraction``, ``class_weight``,
    ``pooled_budget``, ``parallel_clients``, ``compile``; the tests send generated data to
    a temporary folder with ``{"data_dir": ...}``. ``runs_dir``, ``figures_dir`` and ``reports_dir`` are used as
    given; None picks the defaults in the module docstring.
    Returns the executed reports, the skipped runs and the folders used.
    """
    from .models import PAPER_MODELS

    models = list(models) if models else list(PAPER_MODELS)
    modes = list(modes) if modes else list(DEFAULT_MODES)
    if seeds is not None and seed is not None:
        raise UserError("pass seeds or seed, not both (seed N is the shorthand for seeds [N]).")
    seeds = [int(s) for s in (seeds if seeds is not None else [0 if seed is None else seed])]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must be one or more distinct integers, got {seeds}.")
    overrides = dict(overrides or {})
    reserved = sorted(set(overrides) & set(PER_RUN_KEYS))
    if reserved:
        raise UserError(
            f"overrides may not set {', '.join(reserved)}; pass them as the reproduction's own "
            "arguments (profile, data, models, modes, seeds, device)."
        )
    notebooks_dir = Path(notebooks_dir)
    # Every run's config is checked before anything runs: a typo fails in a second.
    for seed_ in seeds:
        for model in models:
            for mode in modes:
                config.resolve(profile, None, model=model, mode=mode, data=data, seed=seed_, device=device, **overrides)
    if not (notebooks_dir / "00_data.ipynb").is_file():
        raise UserError(f"no notebooks in {notebooks_dir}; run `fedlib reproduce` from a checkout of the repository.")

    base = config.resolve(profile, None, data=data, seed=seeds[0], device=device, **overrides)
    dataset = data_set(base, progress)
    figures_default, reports_default = output_dirs(profile, dataset, is_profile_synthetic(base))
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir(profile, dataset)
    figures_dir = Path(figures_dir) if figures_dir is not None else figures_default
    report_dir = Path(reports_dir) if reports_dir is not None else reports_default
    steps = plan(
        profile=profile,
        data=data,
        models=models,
        modes=modes,
        seeds=seeds,
        runs_dir=runs_dir,
        figures_dir=figures_dir,
        device=device,
        force=force,
        overrides=overrides,
        notebooks_dir=notebooks_dir,
    )

    # What to do with each run folder, decided before any notebook runs: a run trained with
    # another config stops the reproduction here, with nothing written.
    actions, mismatched = {}, []
    for step in steps:
        if step.run_dir is None:
            continue
        wanted = wanted_config(run_config(step.parameters), dataset)
        keys = [] if force else config_differences(step.run_dir, wanted)
        if keys:
            mismatched.append((step.run_dir, keys, wanted))
        else:
            actions[step.run_dir] = decide(step.run_dir, wanted, force=force)
    if mismatched:
        run_dir, keys, wanted = mismatched[0]
        raise UserError(mismatch_message(run_dir, keys, wanted, others=len(mismatched) - 1))

    print(f"data set: {dataset.tag} ({dataset.root}, fingerprint {dataset.fingerprint})")
    print(f"runs: {runs_dir}/  figures: {figures_dir}/  executed notebooks: {report_dir}/", flush=True)
    executed, skipped = [], []
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
        print(f"[{i}/{len(steps)}] {step.report}{note}", flush=True)
        executed.append(
            execute(
                notebooks_dir / f"{step.notebook}.ipynb",
                report_dir / f"{step.report}.ipynb",
                step.parameters,
                progress=progress,
                run_dir=step.run_dir,
            )
        )
    print(f"data set:           {dataset.tag} ({dataset.root})")
    print(f"figures and tables: {figures_dir}/")
    print(f"executed notebooks: {report_dir}/")
    print(f"run directories:    {runs_dir}/")
    return {
        "executed": executed,
        "skipped": skipped,
        "figures_dir": figures_dir,
        "reports_dir": report_dir,
        "runs_dir": runs_dir,
        "data_set": dataset,
    }
