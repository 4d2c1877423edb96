"""Moved to ``fedlib.run.results`` (and ``run_name`` to ``fedlib.run.folder``); this module
re-exports them while the notebooks, plots, explain and study still import ``fedlib.results``.
Remove it once nothing does."""

from .run.folder import run_name
from .run.results import (
    LAST_EVALS,
    Run,
    check_one_dataset,
    check_unique,
    find_runs,
    last_evals_accuracy,
    load_run,
    metrics_table,
    run_metrics,
    sample_passes,
)

__all__ = [
    "LAST_EVALS",
    "Run",
    "check_one_dataset",
    "check_unique",
    "find_runs",
    "last_evals_accuracy",
    "load_run",
    "metrics_table",
    "run_metrics",
    "run_name",
    "sample_passes",
]
