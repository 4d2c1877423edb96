"""``fedlib reproduce``: execute every notebook in order with papermill.

00_data, then 01_train once per (model, mode), then 02_loss_curves,
03_accuracy and 04_gradcam (when that notebook exists). Each executed copy is
kept in ``<reports_dir>/<profile>/``: it is written under a temporary name and
renamed when it succeeds, or renamed to ``<name>.failed.ipynb`` when it fails,
so a report on disk is always a complete run of its notebook.

A training run whose ``final.json`` exists is skipped (unless ``force``), and a
run directory with a config but no ``final.json`` is resumed from its last
checkpoint: an interrupted reproduction continues where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import config, runs
from .errors import UserError

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "fedlib"  # registered by `make setup` (python -m ipykernel install --sys-prefix --name fedlib)
DEFAULT_MODES = ("fedavg", "central")  # FedAvg and its pooled reference: what the paper's tables compare
EPSILON = 0.05  # tolerance on |V_FED - V_SUM| that 03_accuracy reports against


@dataclass
class Step:
    notebook: str  # file stem in notebooks/, e.g. "01_train"
    report: str  # file stem of the executed copy, e.g. "01_train-resnet18-fedavg"
    parameters: dict  # what papermill injects; each name is declared in the notebook's parameters cell
    run_dir: Path | None = None  # training steps: the run directory they fill


def plan(*, profile: str, data: str, models: Sequence[str], modes: Sequence[str], runs_dir: str,
         figures_dir: str, seed: int, device: str, force: bool, overrides: dict,
         notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Step]:
    """The notebooks to execute, in order, with their parameters."""
    analysis = {"runs_dir": str(runs_dir), "figures_dir": str(figures_dir), "profile": profile,
                "data": data, "models": list(models), "seed": seed}
    steps = [Step("00_data", "00_data", {**analysis, "overrides": dict(overrides)})]
    for model in models:
        for mode in modes:
            out = Path(runs_dir) / f"{model}-{mode}"
            steps.append(Step("01_train", f"01_train-{model}-{mode}", {
                "model": model, "mode": mode, "profile": profile, "data": data, "out": str(out),
                "seed": seed, "device": device, "force": force, "overrides": dict(overrides),
            }, run_dir=out))
    steps.append(Step("02_loss_curves", "02_loss_curves", analysis))
    steps.append(Step("03_accuracy", "03_accuracy", {**analysis, "epsilon": EPSILON}))
    if (Path(notebooks_dir) / "04_gradcam.ipynb").is_file():
        steps.append(Step("04_gradcam", "04_gradcam", analysis))
    return steps


def ensure_run(cfg: config.TrainConfig, out: str | Path, *, force: bool = False, progress: bool = True) -> dict:
    """Train one run into ``out`` unless it has finished; returns final.json's content.

    A finished run is read back (``force`` retrains it from scratch); a run with
    a config but no final.json is resumed from its last checkpoint.
    """
    from .experiment import run

    out = Path(out)
    finished = runs.is_finished(out)
    if finished and not force:
        print(f"{out} has finished (final.json exists): not retraining; pass force=True to retrain.")
        return runs.read_json(out / "final.json")
    resume = not force and (out / "config.json").is_file()
    if resume:
        print(f"{out} has a config but no final.json: resuming from its last checkpoint.")
    overwrite = not resume and out.is_dir() and any(out.iterdir())
    return run(cfg, out, resume=resume, overwrite=overwrite, progress=progress)


def execute(notebook: Path, report: Path, parameters: dict, *, progress: bool = True) -> Path:
    """Run one notebook with papermill into ``report`` (atomically); failures raise UserError."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    report.parent.mkdir(parents=True, exist_ok=True)
    running = report.with_name(f".{report.stem}.running.ipynb")
    failed = report.with_name(f"{report.stem}.failed.ipynb")
    try:
        pm.execute_notebook(str(notebook), str(running), parameters=parameters, kernel_name=KERNEL,
                            progress_bar=progress, log_output=False, cwd=os.getcwd(),
                            # the kernel's own start-up warnings would interleave with our progress
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except PapermillExecutionError as err:
        os.replace(running, failed)
        lines = [line.strip() for line in err.source.splitlines() if line.strip()]
        # The line that names the cell: the first that is not a magic, an import or a comment.
        shown = next((ln for ln in lines if not ln.startswith(("%", "#", "import ", "from "))), lines[0] if lines else "")
        raise UserError(
            f"notebook {notebook.name} failed in cell index {err.cell_index} (In [{err.exec_count}]: {shown!r}) "
            f"with {err.ename}: {err.evalue.rstrip('.')}; the executed notebook is kept at {failed}."
        ) from None
    except Exception as err:  # the kernel died, is not registered, timed out, ...
        kept = ""
        if running.exists():
            os.replace(running, failed)
            kept = f" The partly executed notebook is kept at {failed}."
        hint = (" Register the kernel with `make setup` (python -m ipykernel install --sys-prefix --name fedlib)."
                if "kernel" in str(err).lower() else "")
        raise UserError(f"notebook {notebook.name} could not run ({type(err).__name__}: {err}).{kept}{hint}") from None
    except BaseException:  # Ctrl-C: keep what ran, under the failed name
        if running.exists():
            os.replace(running, failed)
        raise
    os.replace(running, report)
    failed.unlink(missing_ok=True)
    return report


def reproduce(profile: str = "quick", data: str = "synthetic", models: Sequence[str] | None = None,
              modes: Sequence[str] | None = None, force: bool = False, runs_dir: str | None = None,
              figures_dir: str = "figures", reports_dir: str = "reports", seed: int = 0,
              device: str = "auto", progress: bool = True, overrides: dict | None = None,
              notebooks_dir: str | Path = NOTEBOOKS_DIR) -> dict:
    """Execute the notebooks in order: train what is missing, then draw every figure and table.

    Relative paths are taken from the current folder, where the notebooks run too.
    ``overrides`` are extra TrainConfig fields for every run (the tests send
    generated data to a temporary folder with ``{"data_dir": ...}``).
    Returns the executed reports, the skipped runs and where figures went.
    """
    from .models import PAPER_MODELS

    models = list(models) if models else list(PAPER_MODELS)
    modes = list(modes) if modes else list(DEFAULT_MODES)
    overrides = dict(overrides or {})
    runs_dir = runs_dir or f"runs/{profile}"
    notebooks_dir = Path(notebooks_dir)
    # Every (model, mode) config is checked before anything runs: a typo fails in a second.
    for model in models:
        for mode in modes:
            config.resolve(profile, None, model=model, mode=mode, data=data, seed=seed, device=device, **overrides)
    if not (notebooks_dir / "00_data.ipynb").is_file():
        raise UserError(f"no notebooks in {notebooks_dir}; run `fedlib reproduce` from a checkout of the repository.")

    steps = plan(profile=profile, data=data, models=models, modes=modes, runs_dir=runs_dir,
                 figures_dir=figures_dir, seed=seed, device=device, force=force, overrides=overrides,
                 notebooks_dir=notebooks_dir)
    report_dir = Path(reports_dir) / profile
    executed, skipped = [], []
    for i, step in enumerate(steps, 1):
        if step.run_dir is not None and not force and runs.is_finished(step.run_dir):
            print(f"[{i}/{len(steps)}] skip {step.report}: {step.run_dir} has finished (--force retrains)")
            skipped.append(step.run_dir)
            continue
        print(f"[{i}/{len(steps)}] {step.report}", flush=True)
        executed.append(execute(notebooks_dir / f"{step.notebook}.ipynb", report_dir / f"{step.report}.ipynb",
                                step.parameters, progress=progress))
    print(f"figures and tables: {figures_dir}/")
    print(f"executed notebooks: {report_dir}/")
    print(f"run directories:    {runs_dir}/")
    return {"executed": executed, "skipped": skipped, "figures_dir": Path(figures_dir), "reports_dir": report_dir,
            "runs_dir": Path(runs_dir)}
