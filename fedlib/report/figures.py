"""The figures of the data (00), of one run (01) and of the reproduction (02, 03): the paper's
Figures 1, 3, 4 and 5, and the client distribution, sample images and confusion matrices.

The data figures take plain data; the figures of a reproduction take the finished runs of
``fedlib.run.results.find_runs`` and draw one line or point per seed. Titles say which data set,
profile, image size and seeds stand behind them (``fedlib.report.describe``), flag runs at
chance and name the expected runs that have not finished. Each returns a
``matplotlib.figure.Figure``; ``fedlib.report.io.save_figure`` writes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..data.covidx import CLASSES, load_image, read_split
from ..data.synthetic import is_synthetic, load_mask
from ..metrics import slug
from ..models import MODEL_NAMES
from ..run import results
from ..run.results import Run
from .describe import chance_note, describe_runs
from .selection import FED, POOLED, by_model, missing_runs, runs_of
from .stats import ci95
from .style import (
    MODE_COLORS,
    MODE_NAMES,
    MODEL_COLORS,
    PALETTE,
    SPLIT_COLORS,
    display_name,
    empty_note,
    integer_x,
    new_figure,
    panel_grid,
    styled,
    suptitle,
)


def fig1_class_distribution(counts: pd.DataFrame, about: str) -> Figure:
    """The paper's Figure 1: bars of images per class, train beside test."""
    classes = [c for c in counts.columns if c not in ("split", "total")]
    long = counts.melt(id_vars="split", value_vars=classes, var_name="class", value_name="images")
    with styled():
        fig, axes = new_figure(6.5, 4)
        ax = axes[0, 0]
        sns.barplot(long, x="class", y="images", hue="split", palette=SPLIT_COLORS, ax=ax)
        for bars in ax.containers:
            ax.bar_label(bars, fontsize=8)
        ax.set_xlabel("")
        fig.suptitle(suptitle("Figure 1. Class distribution per split", about), fontsize=10)
    return fig


def fig_client_distribution(counts: pd.DataFrame, about: str) -> Figure:
    """Stacked bars: each client's images, split by class."""
    classes = [c for c in counts.columns if c not in ("client", "total")]
    with styled():
        fig, axes = new_figure(6.5, 4)
        ax = axes[0, 0]
        bottom = np.zeros(len(counts))
        for i, c in enumerate(classes):
            ax.bar(counts["client"].astype(str), counts[c], bottom=bottom, label=c, color=PALETTE[i + 2])
            bottom += counts[c].to_numpy()
        ax.set_xlabel("client")
        ax.set_ylabel("training images")
        ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.suptitle(suptitle("Class distribution per client", about), fontsize=10)
    return fig


def sample_images(data, cfg, split: str = "train", per_class: int = 3) -> list[dict]:
    """A few random images per class (seeded by ``cfg.seed``), read from the image files at full size.

    Each item: ``image`` (uint8 HxW), ``label`` (class name), ``filename``, and
    ``mask`` (bool HxW lesion mask, synthetic data only, else None).
    """
    records, image_dir = read_split(data.root, split, data.layout)  # as fedlib.data.resolve read them
    labels = np.asarray([r.label for r in records])
    rng = np.random.default_rng(cfg.seed)
    synthetic = is_synthetic(data.root)
    out = []
    for k, name in enumerate(data.classes):
        idx = np.flatnonzero(labels == k)
        for i in rng.choice(idx, size=min(per_class, len(idx)), replace=False):
            rec = records[int(i)]
            out.append(
                {
                    "image": np.asarray(load_image(image_dir / rec.filename).convert("L")),
                    "label": name,
                    "filename": rec.filename,
                    "mask": load_mask(data.root, split, rec.filename) if synthetic else None,
                }
            )
    return out


def fig_samples(samples: list[dict], about: str) -> Figure:
    """A grid of sample images, one row per class; lesion masks outlined in red."""
    classes = list(dict.fromkeys(s["label"] for s in samples)) or ["(none)"]
    ncols = max([sum(s["label"] == c for s in samples) for c in classes] + [1])
    with styled("white"):
        fig, axes = new_figure(2.0 * ncols + 0.5, 2.1 * len(classes) + 0.8, len(classes), ncols)
        for ax in axes.flat:
            ax.axis("off")
        for r, c in enumerate(classes):
            for j, s in enumerate(s for s in samples if s["label"] == c):
                ax = axes[r, j]
                ax.imshow(s["image"], cmap="gray", vmin=0, vmax=255)
                if s["mask"] is not None and s["mask"].any():
                    ax.contour(s["mask"], levels=[0.5], colors="red", linewidths=0.8)
                ax.set_title(f"{c}\n{s['filename']}", fontsize=7)
        note = " (red: lesion mask)" if any(s["mask"] is not None for s in samples) else ""
        fig.suptitle(suptitle(f"Sample images per class{note}", about), fontsize=10)
    return fig


def fig_run_history(history: pd.DataFrame, about: str) -> Figure:
    """Training and test loss, and test accuracy, of one run per round (epoch when pooled)."""
    with styled():
        fig, axes = new_figure(9, 3.5, 1, 2)
        loss_ax, acc_ax = axes[0]
        per_client = "client" in history and history["client"].notna().any()
        groups = history.groupby("client") if per_client else [(None, history)]
        for client, h in groups:
            suffix = "" if client is None else f" (client {client})"
            loss_ax.plot(h["round"], h["train_loss"], marker="o", markersize=3, label="train" + suffix)
            if "test_loss" in h:
                t = h.dropna(subset=["test_loss"])
                loss_ax.plot(
                    t["round"], t["test_loss"], marker="s", markersize=3, linestyle="--", label="test" + suffix
                )
                acc_ax.plot(t["round"], t["test_accuracy"], marker="o", markersize=3, label="test" + suffix)
        if history.empty:
            empty_note(loss_ax, "no history yet")
            empty_note(acc_ax, "no history yet")
        else:
            loss_ax.set_ylabel("loss")
            acc_ax.set_ylabel("test accuracy")
            acc_ax.set_ylim(0, 1)
            for ax in (loss_ax, acc_ax):
                ax.set_xlabel("round (epoch when pooled)")
                integer_x(ax)
                ax.legend(fontsize=8)
        fig.suptitle(suptitle("Training history", about), fontsize=10)
    return fig


def _history_lines(ax, runs: Sequence[Run], xy: tuple[str, str], color, label: str, gid_prefix: str) -> None:
    """One line per run of history column ``xy[1]`` against ``xy[0]`` (thin when there are several)
    and, with several, their mean per round."""
    x, y = xy
    drawn = [r for r in runs if {x, y} <= set(r.history.columns)]
    several = len(drawn) > 1
    for r in drawn:
        h = r.history.dropna(subset=[y])
        ax.plot(
            h[x],
            h[y],
            color=color,
            marker="" if several else "o",
            markersize=3,
            linewidth=0.8 if several else 1.5,
            alpha=0.45 if several else 1.0,
            label="_nolegend_" if several else label,
            gid=f"{gid_prefix}-seed{r.seed}",
        )
    if several:
        # Per step (round or epoch), not per x value: FedAvg's seeds sample other clients, so
        # their sample passes differ at the same round, and a mean per x value would jump.
        columns = list(dict.fromkeys(["round", x, y]))
        rows = pd.concat([r.history[columns] for r in drawn]).dropna(subset=[y]).groupby("round")
        mean_y, sd = rows[y].mean(), rows[y].std(ddof=1)
        mean_x = mean_y.index.to_series() if x == "round" else rows[x].mean()
        ax.fill_between(
            mean_x.to_numpy(), (mean_y - sd).to_numpy(), (mean_y + sd).to_numpy(), color=color, alpha=0.15, linewidth=0
        )
        ax.plot(
            mean_x.to_numpy(),
            mean_y.to_numpy(),
            color=color,
            marker="o",
            markersize=3,
            linewidth=1.8,
            label=f"{label} (mean ± sd of {len(drawn)} seeds)",
            gid=f"{gid_prefix}-mean",
        )


def fig3_fl_loss(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> Figure:
    """The paper's Figure 3: federated training loss per round, one line per model (per seed,
    thin, with their mean when there are several)."""
    fed = runs_of(runs, FED, models)
    with styled():
        fig, axes = new_figure(6.5, 4.4)
        ax = axes[0, 0]
        for m, rs in by_model(fed).items():
            _history_lines(ax, rs, ("round", "train_loss"), MODEL_COLORS.get(m), display_name(m), f"{m}-{FED}")
        if fed:
            ax.set_xlabel("federated round")
            integer_x(ax)
            ax.set_ylabel("training loss (sampled clients' local loss)")
            ax.legend(fontsize=8)
        else:
            empty_note(ax)
        fig.suptitle(
            suptitle(
                "Figure 3. Federated training loss",
                describe_runs(fed),
                missing_runs(runs, models, [FED], seeds),
                chance_note(fed),
            ),
            fontsize=10,
        )
    return fig


def _passes_ratio(runs: Sequence[Run], model: str) -> float:
    """Mean over seeds of pooled / FedAvg sample passes (last history rows) of one model."""
    fed = {r.seed: results.sample_passes(r) for r in runs if r.model == model and r.mode == FED}
    pooled = {r.seed: results.sample_passes(r) for r in runs if r.model == model and r.mode == POOLED}
    ratios = [pooled[s] / fed[s] for s in fed if s in pooled]
    return float(np.mean(ratios)) if ratios else float("nan")


def fig5_fl_vs_pooled_loss(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> Figure:
    """The paper's Figure 5: FedAvg beside pooled training loss, one panel per model, against
    training images processed (``sample_passes`` of history.csv).

    Rounds and epochs are not equal compute: FedAvg round r (C·K of K clients, E local epochs
    each) has made about r·E·C·N sample passes, pooled epoch e has made e·N (N training images).
    Each panel's title gives the ratio of pooled to FedAvg sample passes at the end.
    """
    shown = runs_of(runs, FED, models) + runs_of(runs, POOLED, models)
    order = list(dict.fromkeys(r.model for r in runs_of(shown, FED, models) + runs_of(shown, POOLED, models)))
    order = [m for m in (models if models is not None else MODEL_NAMES) if m in order] + [
        m for m in order if m not in (models if models is not None else MODEL_NAMES)
    ]
    with styled():
        fig, axes = panel_grid(len(order), 2, 4.4, 3.4, 1.3)
        for ax, m in zip(axes.flat, order, strict=False):
            for mode in (FED, POOLED):
                _history_lines(
                    ax,
                    [r for r in shown if r.model == m and r.mode == mode],
                    ("sample_passes", "train_loss"),
                    MODE_COLORS[mode],
                    MODE_NAMES[mode],
                    f"{m}-{mode}",
                )
            ratio = _passes_ratio(shown, m)
            ax.set_title(
                display_name(m) + ("" if math.isnan(ratio) else f" · pooled/FedAvg passes {ratio:.2f}x"), fontsize=9
            )
            ax.set_xlabel("training images processed (sample passes)")
            ax.set_ylabel("training loss (FedAvg: sampled clients' local loss)", fontsize=8)
            ax.legend(fontsize=8)
        fig.suptitle(
            suptitle(
                "Figure 5. Federated vs pooled training loss, against training images processed",
                describe_runs(shown),
                missing_runs(runs, models, [FED, POOLED], seeds),
                "x: sample passes (FedAvg round r ≈ r·E·C·N, pooled epoch e = e·N), "
                "so equal x is equal compute; rounds and epochs are not",
                chance_note(shown),
            ),
            fontsize=10,
        )
    return fig


def _clipped_ci95(values) -> tuple[float, float]:
    """The 95% t-interval of the mean of ``values``, within [0, 1]."""
    values = np.asarray(values, dtype=float)
    half = ci95(values)
    mean = float(values.mean())
    return (mean, mean) if math.isnan(half) else (max(0.0, mean - half), min(1.0, mean + half))


def fig4_per_label_accuracy(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None, split: str = "test"
) -> Figure:
    """The paper's Figure 4: grouped bars of per-label accuracy (sensitivity) with FedAvg, one
    group per class; with several seeds the bar is the mean, the whisker the 95% t-interval of
    the mean (clipped to [0, 1], where a sensitivity lies), dots the seeds."""
    fed = runs_of(runs, FED, models)
    classes = list(fed[0].final["classes"]) if fed else list(CLASSES)
    long = pd.DataFrame(
        [
            {
                "model": display_name(r.model),
                "seed": r.seed,
                "class": c,
                "sensitivity": results.run_metrics(r)[f"{split}_sensitivity_{slug(c)}"],
            }
            for r in fed
            for c in classes
        ],
        columns=["model", "seed", "class", "sensitivity"],
    )
    names = list(dict.fromkeys(long["model"]))
    several = len(long) and long.groupby("model")["seed"].nunique().max() > 1
    colors = {display_name(m): c for m, c in MODEL_COLORS.items()}
    with styled():
        fig, axes = new_figure(7, 4.4)
        ax = axes[0, 0]
        if long.empty:
            empty_note(ax)
        else:
            layout = dict(x="class", y="sensitivity", hue="model", order=classes, hue_order=names, ax=ax)
            sns.barplot(
                long,
                **layout,
                palette=colors,
                errorbar=_clipped_ci95 if several else None,
                capsize=0.1,
                err_kws={"linewidth": 1},
            )
            for bars in ax.containers:
                ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
            if several:
                sns.stripplot(long, **layout, palette={n: "0.15" for n in names}, dodge=True, size=3, legend=False)
            ax.set_ylim(0, 1.22)  # headroom for the legend above the bars
            ax.set_xlabel("")
            ax.set_ylabel(f"per-label accuracy ({split} sensitivity)")
            ax.legend(fontsize=8, loc="upper center", ncol=4)
        fig.suptitle(
            suptitle(
                "Figure 4. Per-label accuracy with federated learning"
                + (" (bars: mean, whiskers: 95% t-interval of the mean within [0, 1], dots: seeds)" if several else ""),
                describe_runs(fed),
                missing_runs(runs, models, [FED], seeds),
                chance_note(fed),
            ),
            fontsize=10,
        )
    return fig


def fig_confusion(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None, split: str = "test"
) -> Figure:
    """Confusion matrices (rows true, columns predicted) of the FedAvg models, one panel per model;
    with several seeds the counts are summed over them."""
    fed = runs_of(runs, FED, models)
    groups = by_model(fed)
    several = any(len(rs) > 1 for rs in groups.values())
    with styled("white"):
        fig, axes = panel_grid(len(groups), 4, 3.4, 3.3, 1.2)
        for ax, (m, rs) in zip(axes.flat, groups.items(), strict=False):
            classes = rs[0].final["classes"]
            cm = np.sum([np.asarray(r.final[split]["confusion"]) for r in rs], axis=0)
            sns.heatmap(
                cm,
                annot=True,
                fmt="d",
                cmap="Blues",
                cbar=False,
                square=True,
                ax=ax,
                xticklabels=classes,
                yticklabels=classes,
            )
            acc = np.array([r.final[split]["accuracy"] for r in rs], dtype=float)
            text = f"{acc.mean():.3f}" + (f" ± {acc.std(ddof=1):.3f}" if len(acc) > 1 else "")
            chance = sum(results.run_metrics(r)["at_chance"] for r in rs)
            flag = "" if not chance else (" · AT CHANCE" if len(rs) == 1 else f" · {chance}/{len(rs)} at chance")
            ax.set_title(f"{display_name(m)} (accuracy {text}){flag}", fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
        summed = " (counts summed over seeds)" if several else ""
        fig.suptitle(
            suptitle(
                f"Confusion matrices on the {split} set, federated learning{summed}",
                describe_runs(fed),
                missing_runs(runs, models, [FED], seeds),
                chance_note(fed),
            ),
            fontsize=10,
        )
    return fig
