"""Does ``--class-weight balanced`` help on a COVIDx-like class mix?

ResNet18, FedAvg, the quick profile, on a synthetic set with COVIDx v3's class
shares (58% normal, 40% pneumonia, 2% COVID-19) and 1200 / 600 images, so that
the test set holds a dozen COVID-19 images. Each seed trains once without and
once with balanced class weights (each client weights its loss by its own
counts). Writes ``figures/table_class_weight.md`` (and .csv): accuracy,
balanced accuracy and COVID-19 sensitivity on the test set, per seed and mean.
Runs are kept in ``runs/class_weight/`` and reused when they have finished.

    python benchmarks/class_weight.py [--seeds 0 1] [--figures-dir figures]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from fedlib import config
from fedlib.launch import run
from fedlib.metrics import slug
from fedlib.report.io import markdown_table, save_table
from fedlib.run import folder, io

COVIDX_MIX = dict(synth_class_mix="covidx", synth_n_train=1200, synth_n_test=600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--runs-dir", default="runs/class_weight")
    ap.add_argument("--figures-dir", default="figures")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        for weight in ("none", "balanced"):
            cfg = config.resolve("quick", model="resnet18", mode="fedavg", seed=seed, class_weight=weight, **COVIDX_MIX)
            out = Path(args.runs_dir) / f"resnet18-fedavg-{weight}-seed{seed}"
            final = io.read_json(out / "final.json") if folder.is_finished(out) else run(cfg, out, overwrite=True)
            test = final["test"]
            rows.append(
                {
                    "class_weight": weight,
                    "seed": seed,
                    "accuracy": test["accuracy"],
                    "balanced_accuracy": test["balanced_accuracy"],
                    "covid19_sensitivity": test[f"sensitivity_{slug('COVID-19')}"],
                }
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    means = table.groupby("class_weight", sort=False)[["accuracy", "balanced_accuracy", "covid19_sensitivity"]].mean()
    if len(args.seeds) > 1:
        table = pd.concat([table, means.reset_index().assign(seed="mean")], ignore_index=True)
    table.attrs["caption"] = (
        f"ResNet18 FedAvg, quick profile (64 px, 12 rounds), SYNTHETIC chest X-rays with COVIDx v3's class "
        f"shares (1200 train / 600 test images, 2% COVID-19), test set; {len(args.seeds)} seed(s) "
        f"({', '.join(map(str, args.seeds))}). Command: python benchmarks/class_weight.py --seeds "
        f"{' '.join(map(str, args.seeds))}."
    )
    save_table(table, args.figures_dir, "table_class_weight")
    print(markdown_table(table))


if __name__ == "__main__":
    main()
