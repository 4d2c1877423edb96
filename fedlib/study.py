"""The non-IID hospitals study (notebook ``05_non_iid``, ``fedlib study``): how far federated
training falls behind pooled training when hospitals differ, and which standard remedy helps.

One model, one grid: partitions (IID, Dirichlet label skew at several alphas, the natural
split by source) x methods (pooled, local-only, FedAvg, FedProx, FedAdam, FedBN). Runs are
named ``<partition>-<method>-seed<seed>`` and trained with ``reproduce.ensure_run``, so a
finished run is reused only for the exact config and data it was trained on.

What the grid found (its table, figures and per-hospital accuracy) is read from the runs by
``fedlib.report.non_iid``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import config
from .run.folder import study_run_name

# (partition, alpha): the label-skew grid of FLamby-style studies, from mild to extreme.
PARTITIONS = (("iid", None), ("dirichlet", 1.0), ("dirichlet", 0.3), ("dirichlet", 0.1), ("by_source", None))
FEDERATED = ("fedavg", "fedprox", "fedadam", "fedbn", "scaffold")
METHODS = ("pooled", "local", *FEDERATED)


@dataclass
class Study:
    model: str = "resnet18"
    profile: str = "quick"
    data: str = "synthetic"
    seeds: tuple[int, ...] = (0,)
    partitions: tuple = PARTITIONS
    methods: tuple[str, ...] = METHODS
    # Overrides of the profile for every run. Four hospitals (the synthetic set's four sources),
    # all of them in every round as in cross-silo federations; a round is one local epoch, so
    # R rounds make as many sample passes as R pooled epochs (pooled_budget "matched").
    # At 32 px a ResNet18 step costs about two thirds of a 64 px one (the weight gradients of
    # its 11M parameters dominate), which keeps the committed single-seed grid within 20 CPU minutes.
    overrides: dict = field(
        default_factory=lambda: dict(clients=4, fraction=1.0, rounds=10, local_epochs=1, image_size=32, eval_every=2)
    )
    jobs: int = 2  # runs trained at once, one CPU thread each (see train_all)
    # Per-method settings, chosen on the validation split (benchmarks/study_validation.py, BENCHMARKS.md):
    # FedAdam server lr 0.01 of {0.1, 0.01, 0.001}, FedProx mu 0.1 of {0.01, 0.1, 1}.
    method_settings: dict = field(
        default_factory=lambda: {"fedprox": dict(proximal_mu=0.1), "fedadam": dict(server_lr=0.01)}
    )


def run_config(study: Study, partition: str, alpha: float | None, method: str, seed: int) -> config.TrainConfig:
    """The config of one cell. Pooled training ignores the partition (one run serves all)."""
    values = {**study.overrides, "model": study.model, "data": study.data, "seed": seed}
    if method == "pooled":
        values.update(mode="central")
    elif method == "local":
        values.update(mode="local", partition=partition)
    else:
        values.update(mode="fedavg", strategy=method, partition=partition, **study.method_settings.get(method, {}))
    if method != "pooled" and alpha is not None:
        values["alpha"] = alpha
    return config.resolve(study.profile, None, **values)


def cells(study: Study) -> list[tuple[str, str, float | None, str, int]]:
    """(run name, partition, alpha, method, seed) of every run to train, pooled once per seed."""
    out = []
    for seed in study.seeds:
        if "pooled" in study.methods:
            out.append((study_run_name("iid", None, "pooled", seed), "iid", None, "pooled", seed))
        for partition, alpha in study.partitions:
            for method in study.methods:
                if method != "pooled":
                    out.append((study_run_name(partition, alpha, method, seed), partition, alpha, method, seed))
    return out


def run_study(study: Study, runs_dir: str | Path, *, force: bool = False, progress: bool = True) -> list[Path]:
    """Train (or reuse) every run of the grid into ``runs_dir``; returns their folders."""
    todo = [
        (run_config(study, partition, alpha, method, seed), Path(runs_dir) / name)
        for name, partition, alpha, method, seed in cells(study)
    ]
    train_all(todo, study.jobs, force=force, progress=progress)
    return [out for _, out in todo]


def train_all(
    todo: list[tuple[config.TrainConfig, Path]], jobs: int, *, force: bool = False, progress: bool = True
) -> None:
    """``reproduce.ensure_run`` of each (config, folder); ``jobs`` > 1 trains that many at once,
    each in its own process on one CPU thread: on 2 cores two one-thread ResNet18 runs make
    1.35x the steps per second of one two-thread run (BENCHMARKS.md). A run's result does not
    depend on ``jobs``."""
    from .data.resolve import load_dataset
    from .reproduce import ensure_run

    load_dataset(todo[0][0], progress=progress)  # data and cache written once, before any worker reads them
    if jobs <= 1:
        for cfg, out in todo:
            ensure_run(cfg, out, force=force, progress=progress)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread) as pool:
        for line in pool.map(_ensure, *zip(*todo, strict=True), [force] * len(todo)):
            print(line, flush=True)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _ensure(cfg: config.TrainConfig, out: Path, force: bool) -> str:
    import contextlib
    import io

    from .reproduce import ensure_run

    with contextlib.redirect_stdout(io.StringIO()):  # one line per run from the parent instead
        final = ensure_run(cfg, out, force=force, progress=False)
    return f"{out.name}: finished ({final['wall_time']:.0f} s of training)"
