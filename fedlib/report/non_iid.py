"""What the non-IID hospitals study found (notebook ``05_non_iid``): its table, the plain
sentences read from it, its three figures and the line that says what they stand on.

Per-hospital accuracy is the accuracy of the model a hospital ends with (the global model;
with FedBN its own normalization layers; local-only its own model) on its own patients:
with the split by source, the test images of its source; with a label-skewed split, which
has no hospital-specific test images, the test set reweighted to the hospital's class mix
(the sum over classes of its share of that class times the model's sensitivity for it).

The grid and its training are ``fedlib.study``'s. Figures are built on ``Figure()``, not
pyplot state; ``fedlib.report.io`` writes them and the tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data.covidx import positive_class
from ..metrics import slug, summarize_confusion
from ..run import results
from ..run.folder import partition_label
from ..study import FEDERATED, METHODS, Study, cells


def hospital_accuracies(final: dict, partition: str) -> list[float]:
    """Each hospital's accuracy on its own patients (module docstring), from final.json."""
    classes = tuple(final["classes"])
    per_model = final.get("per_client") or [final] * final["clients"]
    out = []
    for c, counts in enumerate(final["client_class_counts"]):
        m = per_model[c]
        if partition == "by_source":
            (source,) = final["client_sources"][c]
            out.append(summarize_confusion(m["test_by_source"][source], classes)["accuracy"])
        else:
            sens = summarize_confusion(m["test"]["confusion"], classes)
            share = np.asarray(counts, dtype=float) / np.sum(counts)
            out.append(float(sum(share[i] * sens[f"sensitivity_{slug(k)}"] for i, k in enumerate(classes))))
    return out


def last_evals(run: results.Run, column: str, k: int = results.LAST_EVALS) -> float:
    """Mean of ``column`` over the run's last ``k`` evaluations (local-only: the mean over its
    hospitals' models at each evaluation first). One evaluation of a model trained with Adam at
    the quick profile's learning rate is one noisy point: pooled training went 0.86 -> 0.43
    between its last two evaluations."""
    h = run.history
    if column not in h:
        return float("nan")
    per_eval = h.groupby("round")[column].mean() if "client" in h else h.set_index("round")[column]
    per_eval = per_eval.dropna()
    return float(per_eval.tail(k).mean()) if len(per_eval) else float("nan")


def table(study: Study, runs_dir: str | Path) -> pd.DataFrame:
    """One row per (partition, method, seed): test accuracy, balanced accuracy and COVID-19
    sensitivity (``positive``'s in the binary task; each the mean over the last 3 evaluations, ``last_evals``), the last
    evaluation's accuracy, and per-hospital accuracy of the final models (mean, worst, best).
    Local-only's numbers are means over its hospitals' own models (its "best" column says how
    the best one did at the end)."""
    rows = []
    for name, partition, alpha, method, seed in cells(study):
        run = results.load_run(Path(runs_dir) / name)
        shown = study.partitions if method == "pooled" else [(partition, alpha)]
        for p, a in shown:
            row = {
                "partition": partition_label(p, a),
                "alpha": a,
                "method": method,
                "seed": seed,
                "accuracy": last_evals(run, "test_accuracy"),
                "balanced_accuracy": last_evals(run, "test_balanced_accuracy"),
                "covid19_sensitivity": last_evals(
                    run, f"test_sensitivity_{slug(positive_class(run.final['classes']))}"
                ),
                "final_accuracy": run.final["test"]["accuracy"],
            }
            if method == "local":
                row["best_hospital_model_accuracy"] = max(c["test"]["accuracy"] for c in run.final["per_client"])
            if method != "pooled":
                hosp = hospital_accuracies(run.final, p)
                row.update(
                    hospital_mean=float(np.mean(hosp)),
                    hospital_worst=float(np.min(hosp)),
                    hospital_best=float(np.max(hosp)),
                    per_hospital=[round(h, 4) for h in hosp],
                )
            rows.append(row)
    return pd.DataFrame(rows)


# ---- figures ------------------------------------------------------------------------------------

METHOD_NAMES = {
    "pooled": "pooled",
    "local": "local-only (mean)",
    "fedavg": "FedAvg",
    "fedprox": "FedProx",
    "fedadam": "FedAdam",
    "fedbn": "FedBN",
    "scaffold": "SCAFFOLD",
}
METHOD_COLORS = {m: f"C{i}" for i, m in enumerate(METHODS)}  # one colour per method in every figure
METRICS = {
    "accuracy": "test accuracy",
    "balanced_accuracy": "balanced accuracy",
    "covid19_sensitivity": "COVID-19 sensitivity",
}


def _mean_over_seeds(df: pd.DataFrame, column: str) -> pd.DataFrame:
    return df.groupby(["partition", "method"], sort=False)[column].mean().unstack("method")


def fig_methods(df: pd.DataFrame, about: str) -> Figure:
    """Accuracy, balanced accuracy and COVID-19 sensitivity per partition, one bar per method."""
    fig = Figure(figsize=(5.2 * len(METRICS), 3.6))
    axes = fig.subplots(1, len(METRICS), sharey=True)
    methods = list(dict.fromkeys(df["method"]))
    for ax, (column, label) in zip(axes, METRICS.items(), strict=True):
        values = _mean_over_seeds(df, column)[methods]
        width = 0.8 / len(methods)
        x = np.arange(len(values))
        for i, m in enumerate(methods):
            ax.bar(
                x + (i - (len(methods) - 1) / 2) * width,
                values[m],
                width,
                label=METHOD_NAMES[m],
                color=METHOD_COLORS[m],
            )
        ax.set_xticks(x, values.index, rotation=20)
        ax.set_title(label, fontsize=10)
        ax.set_ylim(0, 1)
        ax.axhline(1 / 3, color="grey", lw=0.8, ls=":")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"Methods under non-IID hospitals (dotted: chance)\n{about}", fontsize=10)
    fig.tight_layout()
    return fig


def fig_alpha(df: pd.DataFrame, about: str) -> Figure:
    """Test accuracy against the Dirichlet alpha (IID drawn at the right as alpha = inf)."""
    skew = df[df["partition"].str.startswith("dirichlet") | (df["partition"] == "iid")].copy()
    largest = skew["alpha"].max(skipna=True)
    iid_x = (largest if np.isfinite(largest) else 1.0) * 10
    skew["x"] = skew["alpha"].fillna(iid_x)
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for m in dict.fromkeys(skew["method"]):
        line = skew[skew["method"] == m].groupby("x")["accuracy"].mean()
        ax.plot(line.index, line.values, marker="o", label=METHOD_NAMES[m], color=METHOD_COLORS[m])
    ax.set_xscale("log")
    ticks = sorted(skew["x"].unique())
    ax.set_xticks(ticks, [f"{t:g}" if t != iid_x else "IID" for t in ticks])
    ax.set_xlabel("Dirichlet alpha (smaller: each hospital has fewer classes)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"Accuracy against label skew\n{about}", fontsize=10)
    fig.tight_layout()
    return fig


def fig_hospitals(df: pd.DataFrame, about: str) -> Figure:
    """Per-hospital accuracy on its own patients, one panel per partition, against local-only."""
    hosp = df[df["method"] != "pooled"]
    partitions = list(dict.fromkeys(hosp["partition"]))
    fig = Figure(figsize=(3.4 * len(partitions), 3.6))
    axes = fig.subplots(1, len(partitions), sharey=True, squeeze=False)
    for ax, p in zip(axes[0], partitions, strict=True):
        rows = hosp[hosp["partition"] == p]
        for i, (m, group) in enumerate(rows.groupby("method", sort=False)):
            values = np.mean(np.stack(group["per_hospital"].map(np.asarray).to_list()), axis=0)
            ax.plot(
                np.arange(len(values)) + (i - 2) * 0.06,
                values,
                marker="o",
                ls="" if m != "local" else "--",
                label="alone (local-only)" if m == "local" else METHOD_NAMES[m],
                color=METHOD_COLORS[m],
            )
        ax.set_title(p, fontsize=10)
        ax.set_xlabel("hospital")
        ax.set_xticks(range(len(values)))
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("accuracy on its own patients")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"Who gains from federation: each hospital's accuracy (dashed: alone)\n{about}", fontsize=10)
    fig.tight_layout()
    return fig


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """The main table: one row per partition, test accuracy (balanced accuracy) per method,
    means over seeds."""
    acc = _mean_over_seeds(df, "accuracy")
    bal = _mean_over_seeds(df, "balanced_accuracy")
    methods = [m for m in METHODS if m in acc.columns]
    out = pd.DataFrame(
        {METHOD_NAMES[m]: [f"{a:.3f} ({b:.3f})" for a, b in zip(acc[m], bal[m], strict=True)] for m in methods},
        index=acc.index,
    )
    out.index.name = "partition"
    return out.reset_index()


def reading(df: pd.DataFrame) -> list[str]:
    """Plain sentences computed from the table: per partition, the best federated method, its
    gap to pooled training and to FedAvg, and how many hospitals did better alone."""
    acc = _mean_over_seeds(df, "accuracy")
    lines = []
    for p in acc.index:
        fed = acc.loc[p, [m for m in FEDERATED if m in acc.columns]]
        best = fed.idxmax()
        line = f"{p}: best federated method {METHOD_NAMES[best]} {fed[best]:.3f} (FedAvg {acc.loc[p, 'fedavg']:.3f}"
        if "pooled" in acc.columns:
            line += f", pooled {acc.loc[p, 'pooled']:.3f}"
        if "local" in acc.columns:
            line += f", local-only mean {acc.loc[p, 'local']:.3f}"
        rows = df[df["partition"] == p].groupby("method")["per_hospital"].first()
        if "local" in rows and best in rows:
            worse = sum(f < loc for f, loc in zip(rows[best], rows["local"], strict=True))
            line += f"); with {METHOD_NAMES[best]}, {worse} of {len(rows['local'])} hospitals do worse than alone"
        else:
            line += ")"
        lines.append(line + ".")
    return lines


def describe(runs_dir: str | Path, study: Study) -> str:
    """One line for titles: data set, profile, image size, model and seeds (all read from the runs)."""
    found = [results.load_run(Path(runs_dir) / name) for name, *_ in cells(study)]
    results.check_one_dataset(found)
    first = found[0]
    size = first.config["image_size"]
    seeds = sorted({r.seed for r in found})
    seeds_text = (
        f"1 seed ({seeds[0]})" if len(seeds) == 1 else f"mean over {len(seeds)} seeds ({', '.join(map(str, seeds))})"
    )
    return (
        f"{first.final['data_description']} · {first.model} · profile {first.config['profile']} · "
        f"{size}×{size} px · {first.config['clients']} hospitals · {seeds_text}"
    )
