"""Choose the study's per-method settings on the validation split, never on the test set.

Trains FedAdam at three server learning rates and FedProx at three proximal weights on the
Dirichlet alpha=0.3 split of the study (notebook 05_non_iid, quick profile, seed 0) and
prints each one's validation accuracy: the mean over its last 3 evaluations (see
``results.last_evals_accuracy``) and at the end. fedlib.study.Study.method_settings holds the
winners.

    python benchmarks/study_validation.py [--runs-dir runs/study-validation]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from fedlib import study
from fedlib.run import results

TRIALS = {
    "fedadam": [dict(server_lr=lr) for lr in (0.1, 0.01, 0.001)],
    "fedprox": [dict(proximal_mu=mu) for mu in (0.01, 0.1, 1.0)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs/study-validation")
    args = parser.parse_args()
    grid = study.Study()
    todo = []
    for method, trials in TRIALS.items():
        for settings in trials:
            cfg = dataclasses.replace(study.run_config(grid, "dirichlet", 0.3, method, 0), **settings)
            name = f"{method}-" + "-".join(f"{k}{v:g}" for k, v in settings.items())
            todo.append((cfg, Path(args.runs_dir) / name))
    study.train_all(todo, grid.jobs)
    print("| run | validation accuracy, mean of last 3 evaluations | at the end |\n|---|---|---|")
    for _, out in todo:
        run = results.load_run(out)
        last3 = results.last_evals_accuracy(run.history, split="val")
        print(f"| {out.name} | {last3:.3f} | {run.final['val']['accuracy']:.3f} |")


if __name__ == "__main__":
    main()
