"""The tables of the paper and of the data: counts per class, split and client (00), one run's
final metrics (01), and the reproduction's Tables 2-4 and the FedAvg-pooled gap (03).

Each returns a ``DataFrame`` whose ``attrs["caption"]`` says what it shows, on which data and
seeds; ``fedlib.report.io.save_table`` writes it. With several seeds a table gives mean ± sd
over seeds, the 95% t-interval of the mean (``<column>_ci95``: its half-width) and the per-seed values (``attrs["per_seed"]``, written beside it as
``<name>_per_seed.csv``). A run whose balanced accuracy is at chance
(``fedlib.metrics.CHANCE_MARGIN``) is flagged; an expected run that has not finished is named
(``attrs["missing"]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..data.covidx import CLASSES, positive_class
from ..metrics import slug
from ..run import results
from ..run.results import LAST_EVALS, Run
from .describe import CHANCE_RULE, chance_note, describe_final, describe_runs
from .selection import FED, POOLED, missing_runs, runs_of
from .stats import ci95
from .style import display_name

TABLE_DIGITS = 3  # Markdown tables of a reproduction: 0.812 ± 0.021
LAST = f"test_accuracy_last{LAST_EVALS}"  # column: mean test accuracy over the last evaluations
COVID = slug("COVID-19")


def split_counts(data, train_idx=None, test_idx=None, about: str | None = None) -> pd.DataFrame:
    """Images per class and split (the paper's Figure 1 numbers) as a wide table."""
    rows = []
    splits = [("train", data.train_labels, train_idx), ("test", data.test_labels, test_idx)]
    if getattr(data, "val_labels", None) is not None:  # a published validation split (--val-split)
        splits.insert(1, ("val", data.val_labels, None))
    for split, labels, idx in splits:
        labels = np.asarray(labels) if idx is None else np.asarray(labels)[idx]
        counts = np.bincount(labels, minlength=len(data.classes))
        rows.append(
            {
                "split": split,
                **{c: int(n) for c, n in zip(data.classes, counts, strict=True)},
                "total": int(counts.sum()),
            }
        )
    df = pd.DataFrame(rows)
    df.attrs["caption"] = f"Images per class and split. {about or data.description}."
    return df


def client_counts(parts, labels, classes: Sequence[str], about: str = "") -> pd.DataFrame:
    """Images per class held by each client under the configured partition."""
    labels = np.asarray(labels)
    rows = []
    for i, part in enumerate(parts):
        counts = np.bincount(labels[np.asarray(part)], minlength=len(classes))
        rows.append(
            {"client": i, **{c: int(n) for c, n in zip(classes, counts, strict=True)}, "total": int(counts.sum())}
        )
    df = pd.DataFrame(rows)
    df.attrs["caption"] = f"Training images per class held by each client. {about}".strip()
    return df


def final_metrics_table(final: dict) -> pd.DataFrame:
    """Train and test metrics of one run (train on un-augmented images), one row per split."""
    classes = final.get("classes", [])
    rows = []
    for split in ("train", "test"):
        m = final[split]
        rows.append(
            {
                "split": split,
                "accuracy": m["accuracy"],
                "balanced_accuracy": m["balanced_accuracy"],
                **{f"sensitivity {c}": m[f"sensitivity_{slug(c)}"] for c in classes},
                "loss": m.get("loss", float("nan")),
                "images": m.get("n"),
            }
        )
    df = pd.DataFrame(rows)
    df.attrs["caption"] = f"Final metrics. {describe_final(final)}."
    return df


def _metrics(runs: Sequence[Run]) -> pd.DataFrame:
    rows = results.metrics_table(list(runs))
    return rows if not rows.empty else pd.DataFrame(columns=["model", "seed", "at_chance"])


def _seed_summary(rows: pd.DataFrame, columns: dict[str, str], by_seed: str | None = None) -> pd.DataFrame:
    """One row per model (in the order of ``rows``): how many seeds, the mean over seeds of each of
    ``columns`` (per-run column -> table column) with its sd and the half-width of its 95%
    t-interval beside it (``<column>_sd``, ``<column>_ci95``; NaN for one seed), ``by_seed`` listed per seed, and how many seeds are at chance. The sd and per-seed
    columns are left out when every model has one seed. ``attrs["per_seed"]`` keeps the rows."""
    names = list(columns.values())
    listed = f"{columns[by_seed]}_by_seed" if by_seed else None
    order = ["model", "seeds"]
    for src, dst in columns.items():
        order += [dst, f"{dst}_sd", f"{dst}_ci95"] + ([listed] if src == by_seed else [])
    order.append("seeds_at_chance")
    records = []
    for model, g in rows.groupby("model", sort=False):
        rec: dict = {"model": display_name(model), "seeds": len(g), "seeds_at_chance": int(g["at_chance"].sum())}
        for src, dst in columns.items():
            values = g[src].to_numpy(dtype=float)
            rec[dst] = float(values.mean())  # NaN when a seed lacks it: no mean of the others
            rec[f"{dst}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            rec[f"{dst}_ci95"] = ci95(values)
        if listed:
            rec[listed] = ", ".join(f"s{int(s)} {v:.3f}" for s, v in zip(g["seed"], g[by_seed], strict=True))
        records.append(rec)
    df = pd.DataFrame(records, columns=order)
    if not len(df) or (df["seeds"] <= 1).all():
        df = df.drop(columns=[f"{n}_{k}" for n in names for k in ("sd", "ci95")] + ([listed] if listed else []))
    per_seed = rows.reindex(columns=["model", "seed", *columns, "at_chance"]).rename(columns=columns)
    per_seed["model"] = [display_name(m) for m in per_seed["model"]]
    df.attrs["per_seed"] = per_seed.to_dict("records")
    df.attrs["digits"] = TABLE_DIGITS
    return df


def _annotate(df: pd.DataFrame, title: str, runs: Sequence[Run], missing: Sequence[str], *notes: str) -> pd.DataFrame:
    """Attach the caption: what, on which data and seeds, what the columns mean, what is missing."""
    multi = "seeds" in df and len(df) and (df["seeds"] > 1).any()
    parts = [title, f"{describe_runs(runs)}."]
    if multi:
        parts.append(
            "Cells: mean ± sd over seeds, then [low, high], the 95% confidence interval of the mean "
            "(Student's t, n - 1 degrees of freedom; *_ci95 in the csv is its half-width); differences "
            "inside these intervals are not findings. *_by_seed lists each seed (s<seed> value); every "
            "run's numbers are in the _per_seed.csv beside this table."
        )
    parts += [n for n in notes if n]
    if "seeds_at_chance" in df:
        parts.append(f"seeds_at_chance: runs {CHANCE_RULE}.")
    note = chance_note(runs)
    if note:
        parts.append(note + ".")
    if missing:
        parts.append(f"Missing (no finished run): {', '.join(missing)}.")
    df.attrs["caption"] = " ".join(parts)
    df.attrs["missing"] = list(missing)
    return df


def _accuracy_columns(runs: Sequence[Run]) -> dict[str, str]:
    """Per-run column -> table column of Tables 2 and 4; the sensitivity is the runs' positive
    class's: COVID-19, or ``positive`` in the binary task."""
    positive = _positive(runs)
    return {
        "train_accuracy": "train_accuracy",
        "test_accuracy": "test_accuracy",
        "test_balanced_accuracy": "test_balanced_accuracy",
        f"test_sensitivity_{positive}": f"test_{positive}_sensitivity",
        LAST: LAST,
    }


def _positive(runs: Sequence[Run]) -> str:
    """The slug of the runs' positive class (``fedlib.data.covidx.positive_class``)."""
    return slug(positive_class(runs[0].final["classes"])) if runs and "classes" in runs[0].final else COVID


def _accuracy_note(runs: Sequence[Run]) -> str:
    positive = _positive(runs)
    called = "COVID-19" if positive == COVID else positive
    return (
        f"Train: un-augmented training images. test_balanced_accuracy: mean per-class sensitivity; "
        f"test_{positive}_sensitivity: share of {called} test images called {called}; {LAST}: mean test "
        f"accuracy over the last {LAST_EVALS} evaluations (the last one alone is a noisy point)."
    )


def table2_fl_accuracy(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> pd.DataFrame:
    """The paper's Table 2: FedAvg accuracy and parameter count per model, over seeds."""
    fed = runs_of(runs, FED, models)
    rows = _metrics(fed)
    df = _seed_summary(rows, _accuracy_columns(fed), by_seed="test_accuracy")
    params = [int(rows.loc[rows["model"] == m, "params"].iloc[0]) for m in dict.fromkeys(rows["model"])]
    df.insert(2, "params", params)
    df.insert(3, "params_millions", [p / 1e6 for p in params])
    return _annotate(
        df,
        "Table 2. Accuracy with federated learning (FedAvg).",
        fed,
        missing_runs(runs, models, [FED], seeds),
        _accuracy_note(fed),
    )


def table4_pooled_accuracy(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> pd.DataFrame:
    """The paper's Table 4: accuracy without federated learning (pooled data), over seeds."""
    pooled = runs_of(runs, POOLED, models)
    df = _seed_summary(_metrics(pooled), _accuracy_columns(pooled), by_seed="test_accuracy")
    return _annotate(
        df,
        "Table 4. Accuracy without federated learning (pooled training).",
        pooled,
        missing_runs(runs, models, [POOLED], seeds),
        _accuracy_note(pooled),
    )


def table3_per_label(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None, split: str = "test"
) -> pd.DataFrame:
    """The paper's Table 3: per-label accuracy (per-class sensitivity on ``split``) with FedAvg,
    one row per model, one column per class."""
    fed = runs_of(runs, FED, models)
    classes = list(fed[0].final["classes"]) if fed else list(CLASSES)
    columns = {f"{split}_sensitivity_{slug(c)}": c for c in classes}
    covid = f"{split}_sensitivity_{slug(positive_class(classes))}"
    df = _seed_summary(_metrics(fed), columns, by_seed=covid if covid in columns else None)
    df.attrs["split"] = split
    return _annotate(
        df,
        f"Table 3. Per-label accuracy (sensitivity on the {split} set) with federated learning.",
        fed,
        missing_runs(runs, models, [FED], seeds),
    )


def _ratio_text(ratios: Sequence[float]) -> str:
    ratios = [r for r in ratios if not math.isnan(r)]
    if not ratios:
        return "the runs do not record their sample passes"
    low, high = min(ratios), max(ratios)
    span = f"{low:.2f}x" if high - low < 0.005 else f"{low:.2f}x to {high:.2f}x"
    verdict = "about equal compute" if all(abs(r - 1) <= 0.05 for r in ratios) else "not an equal-compute comparison"
    return f"pooled training made {span} FedAvg's sample passes ({verdict})"


def _verdict(n: int, fed_at_chance: int, pooled_at_chance: int, gap: float, epsilon: float, half: float) -> str:
    """The gap table's verdict for one model over ``n`` paired seeds; no verdict on a gap when
    either mode has a run at chance. With several seeds it reads the 95% interval of the mean
    gap (``half``: its half-width), not the mean alone: "undecided" when the interval holds
    epsilon. One seed has no interval: its verdict reads the one gap."""
    if fed_at_chance and pooled_at_chance:
        seeds = (
            ""
            if n == 1
            else f" (all {n} seeds)"
            if fed_at_chance == pooled_at_chance == n
            else f" (FedAvg {fed_at_chance}, pooled {pooled_at_chance} of {n} seeds)"
        )
        return "not compared: both at chance" + seeds
    if fed_at_chance or pooled_at_chance:
        who, k = ("FedAvg", fed_at_chance) if fed_at_chance else ("pooled", pooled_at_chance)
        return f"not compared: {who} at chance" + ("" if n == 1 else f" in {k} of {n} seeds")
    low, high = (gap, gap) if math.isnan(half) else (gap - half, gap + half)
    if high <= epsilon:
        return "within epsilon"
    if low > epsilon:
        return "outside epsilon"
    return "undecided: the 95% interval holds epsilon"


def table_gap(
    runs: Sequence[Run], epsilon: float, models: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> pd.DataFrame:
    """|V_FED - V_SUM| per model against the tolerance ``epsilon``, over seeds.

    V_FED is the FedAvg model's test accuracy, V_SUM the pooled model's; the paper asks
    whether federated learning stays within epsilon of pooling the data. The FedAvg and
    pooled runs of one seed are paired; the verdict reads the 95% interval of the mean gap
    over the pairs (one seed: the gap). A model at chance in either mode gets no verdict: two majority-class predictors agree
    to the last digit without having learned anything. Beside it: the pooled budget rule
    and the ratio of pooled to FedAvg sample passes (last rows of history.csv).
    """
    fed = {(r.model, r.seed): r for r in runs_of(runs, FED, models)}
    pooled = {(r.model, r.seed): r for r in runs_of(runs, POOLED, models)}
    rows = []
    for key in (k for k in fed if k in pooled):
        f, p = results.run_metrics(fed[key]), results.run_metrics(pooled[key])
        rows.append(
            {
                "model": key[0],
                "seed": key[1],
                "test_fed": f["test_accuracy"],
                "test_pooled": p["test_accuracy"],
                "test_gap": abs(f["test_accuracy"] - p["test_accuracy"]),
                "balanced_fed": f["test_balanced_accuracy"],
                "balanced_pooled": p["test_balanced_accuracy"],
                "balanced_gap": abs(f["test_balanced_accuracy"] - p["test_balanced_accuracy"]),
                "pooled_to_fedavg_passes": p["sample_passes"] / f["sample_passes"],
                "fed_at_chance": f["at_chance"],
                "pooled_at_chance": p["at_chance"],
                "at_chance": f["at_chance"] or p["at_chance"],
                "pooled_budget": p["pooled_budget"],
            }
        )
    columns = [
        "model",
        "seed",
        "test_fed",
        "test_pooled",
        "test_gap",
        "balanced_fed",
        "balanced_pooled",
        "balanced_gap",
        "pooled_to_fedavg_passes",
        "fed_at_chance",
        "pooled_at_chance",
        "at_chance",
        "pooled_budget",
    ]
    rows = pd.DataFrame(rows, columns=columns)
    values = {c: c for c in columns[2:9]}
    df = _seed_summary(rows, values, by_seed="test_gap").drop(columns="seeds_at_chance")
    verdicts, budgets = [], []
    for i, (_, g) in enumerate(rows.groupby("model", sort=False)):
        verdicts.append(
            _verdict(
                len(g),
                int(g["fed_at_chance"].sum()),
                int(g["pooled_at_chance"].sum()),
                df["test_gap"].iloc[i],
                epsilon,
                df["test_gap_ci95"].iloc[i] if "test_gap_ci95" in df else float("nan"),
            )
        )
        budgets.append(" / ".join(sorted({str(b) for b in g["pooled_budget"]})))
    last = next(c for c in ("balanced_gap_ci95", "balanced_gap") if c in df)
    at = df.columns.get_loc(last) + 1
    df.insert(at, "epsilon", [epsilon] * len(df))
    df.insert(at + 1, "verdict", verdicts)
    df.insert(at + 2, "pooled_budget", budgets)
    ratio = (
        f"Pooled budget: {' / '.join(sorted({str(b) for b in rows['pooled_budget']}))}; "
        f"{_ratio_text(list(rows['pooled_to_fedavg_passes']))}."
        if len(rows)
        else ""
    )
    chosen = [r for r in runs if (r.model, r.seed) in fed and (r.model, r.seed) in pooled and r.mode in (FED, POOLED)]
    return _annotate(
        df,
        f"Gap |V_FED - V_SUM| between federated (FedAvg) and pooled test accuracy, and the same for "
        f"balanced accuracy, against epsilon = {epsilon:g}; FedAvg and pooled runs of one seed are paired, "
        "with several seeds the verdict reads the 95% interval of the mean gap: within or outside epsilon only "
        "when the whole interval is, undecided when it holds epsilon.",
        chosen,
        missing_runs(runs, models, [FED, POOLED], seeds),
        "A model at chance in either mode is not compared (verdict 'not compared'): its accuracy is the "
        "majority class's share, and two such runs agree without having learned.",
        ratio,
    )
