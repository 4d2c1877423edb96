"""One function per figure and table of the paper, plus the loaders that feed them.

Figure functions take plain data (data frames, ``final.json`` dicts) and return
a ``matplotlib.figure.Figure``; table functions return a ``DataFrame`` whose
``attrs["caption"]`` says what it shows. Every number comes from a run
directory (``final.json``, ``history.csv``), never from the paper's text.

A missing run is not an error: each function plots the models it was given
and names the expected ones it did not get. Titles always say which data
(synthetic or COVIDx), profile and seed the numbers come from.

Figures are built on ``Figure()`` rather than pyplot, so nothing is shown or
kept alive behind the caller's back; a notebook displays the returned figure.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .data.covidx import CLASSES, Layout, load_image, read_split
from .data.synthetic import is_synthetic, load_mask
from .metrics import slug
from .models import DISPLAY_NAMES, MODEL_NAMES
from .runs import atomic_write_bytes, atomic_write_text

# One look for every figure: applied around each figure's construction, not globally.
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.9),
         "figure.dpi": 100, "axes.titleweight": "bold"}
_PALETTE = sns.color_palette("colorblind", 10)
MODEL_COLORS = {m: _PALETTE[i] for i, m in enumerate(MODEL_NAMES)}
MODE_COLORS = {"fedavg": _PALETTE[0], "central": _PALETTE[1], "local": _PALETTE[2]}
MODE_NAMES = {"fedavg": "FedAvg", "central": "pooled", "local": "local only"}
SPLIT_COLORS = {"train": _PALETTE[0], "test": _PALETTE[1]}
FIG_DPI = 150  # saved PNGs: sharp enough for a paper, small enough for git


# ---------------------------------------------------------------- loading


def run_dir(runs_dir, model: str, mode: str) -> Path:
    """Where the reproduction puts one (model, mode) run."""
    return Path(runs_dir) / f"{model}-{mode}"


def read_final(path) -> dict:
    return json.loads(Path(path).read_text())


def load_finals(runs_dir, models: Sequence[str], mode: str) -> dict[str, dict]:
    """``final.json`` of every finished run of ``mode``, by model; unfinished runs are left out."""
    out = {}
    for model in models:
        path = run_dir(runs_dir, model, mode) / "final.json"
        if path.is_file():
            out[model] = read_final(path)
    return out


def load_history(run: str | Path) -> pd.DataFrame:
    """``history.csv`` of one run directory as a data frame (empty when absent)."""
    path = Path(run) / "history.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def load_histories(runs_dir, models: Sequence[str], mode: str) -> dict[str, pd.DataFrame]:
    """``history.csv`` of every finished run of ``mode``, by model."""
    return {model: load_history(run_dir(runs_dir, model, mode)) for model in load_finals(runs_dir, models, mode)}


def describe_runs(runs_dir, models: Sequence[str], modes: Sequence[str] = ("fedavg", "central"),
                  *, profile: str, seed: int, data: str) -> str:
    """One line for titles: data, profile, seed, read from the finished runs.

    Without finished runs it falls back to the parameters the notebook was given.
    """
    finals = [f for mode in modes for f in load_finals(runs_dir, models, mode).values()]
    if not finals:
        kind = "SYNTHETIC chest X-rays" if data == "synthetic" else f"COVIDx ({data})"
        return f"{kind} · profile {profile} · seed {seed} · no finished runs"
    return " · ".join([
        " / ".join(sorted({f["data_description"] for f in finals})),
        "profile " + " / ".join(sorted({str(f["profile"]) for f in finals})),
        "seed " + " / ".join(sorted({str(f["seed"]) for f in finals})),
    ])


def describe_final(final: dict) -> str:
    """One line for the title of a single run's figure."""
    model = DISPLAY_NAMES.get(final["model"], final["model"])
    return (f"{model} {MODE_NAMES.get(final['mode'], final['mode'])} · {final['data_description']} · "
            f"profile {final['profile']} · seed {final['seed']}")


def describe_data(data, cfg) -> str:
    """One line for the data figures: what data set, how it is split among clients."""
    return (f"{data.description} · profile {cfg.profile} · seed {cfg.seed} · "
            f"{cfg.partition} partition into {cfg.clients} clients")


# ---------------------------------------------------------------- saving


def write_figure(fig: Figure, path, dpi: int = FIG_DPI) -> Path:
    """Write one figure file atomically; the suffix picks the format."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower(), dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def save_figure(fig: Figure, figures_dir, name: str) -> list[Path]:
    """Write ``<name>.png`` and ``<name>.pdf`` atomically; returns both paths."""
    return [write_figure(fig, Path(figures_dir) / f"{name}.{ext}") for ext in ("png", "pdf")]


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table; floats rounded to ``digits``, NaN shown as a dash."""
    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, figures_dir, name: str, digits: int = 4) -> list[Path]:
    """Write ``<name>.csv`` (full precision) and ``<name>.md`` (caption + rounded table) atomically."""
    csv_path, md_path = Path(figures_dir) / f"{name}.csv", Path(figures_dir) / f"{name}.md"
    atomic_write_text(csv_path, df.to_csv(index=False))
    caption = df.attrs.get("caption")
    atomic_write_text(md_path, (f"{caption}\n\n" if caption else "") + markdown_table(df, digits))
    return [csv_path, md_path]


# ---------------------------------------------------------------- helpers


def _style(axes_style: str = "whitegrid"):
    """The project's look for the figure built inside the ``with`` block."""
    return mpl.rc_context({**STYLE, **sns.axes_style(axes_style)})


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _panel_grid(count: int, max_cols: int, panel_w: float, panel_h: float,
                extra_h: float) -> tuple[Figure, np.ndarray]:
    """One panel per shown model (unused panels hidden); a note when nothing is shown."""
    n = max(count, 1)
    ncols = min(n, max_cols)
    nrows = math.ceil(n / ncols)
    fig, axes = _figure(panel_w * ncols, panel_h * nrows + extra_h, nrows, ncols)
    for ax in axes.flat[count:]:
        ax.axis("off")
    if not count:
        axes[0, 0].axis("on")
        _empty_note(axes[0, 0])
    return fig, axes


def _title(title: str, about: str, missing: Sequence[str] = ()) -> str:
    lines = [title, about]
    if missing:
        lines.append("missing (no finished run): " + ", ".join(missing))
    return "\n".join(lines)


def _missing(given: dict, models: Sequence[str] | None, mode: str | None = None) -> list[str]:
    if models is None:
        return []
    suffix = f"-{mode}" if mode else ""
    return [f"{m}{suffix}" for m in models if m not in given]


def _ordered(given: dict, models: Sequence[str] | None) -> list[str]:
    return [m for m in (models if models is not None else given) if m in given]


def _name(model: str) -> str:
    return DISPLAY_NAMES.get(model, model)


def _integer_x(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _empty_note(ax, text: str = "no finished runs") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------- 00: data


def split_counts(data, train_idx=None, test_idx=None, about: str | None = None) -> pd.DataFrame:
    """Images per class and split (the paper's Figure 1 numbers) as a wide table."""
    rows = []
    for split, labels, idx in (("train", data.train_labels, train_idx), ("test", data.test_labels, test_idx)):
        labels = np.asarray(labels) if idx is None else np.asarray(labels)[idx]
        counts = np.bincount(labels, minlength=len(data.classes))
        rows.append({"split": split, **{c: int(n) for c, n in zip(data.classes, counts, strict=True)},
                     "total": int(counts.sum())})
    df = pd.DataFrame(rows)
    df.attrs["caption"] = f"Images per class and split. {about or data.description}."
    return df


def client_counts(parts, labels, classes: Sequence[str], about: str = "") -> pd.DataFrame:
    """Images per class held by each client under the configured partition."""
    labels = np.asarray(labels)
    rows = []
    for i, part in enumerate(parts):
        counts = np.bincount(labels[np.asarray(part)], minlength=len(classes))
        rows.append({"client": i, **{c: int(n) for c, n in zip(classes, counts, strict=True)},
                     "total": int(counts.sum())})
    df = pd.DataFrame(rows)
    df.attrs["caption"] = f"Training images per class held by each client. {about}".strip()
    return df


def fig1_class_distribution(counts: pd.DataFrame, about: str) -> Figure:
    """The paper's Figure 1: bars of images per class, train beside test."""
    classes = [c for c in counts.columns if c not in ("split", "total")]
    long = counts.melt(id_vars="split", value_vars=classes, var_name="class", value_name="images")
    with _style():
        fig, axes = _figure(6.5, 4)
        ax = axes[0, 0]
        sns.barplot(long, x="class", y="images", hue="split", palette=SPLIT_COLORS, ax=ax)
        for bars in ax.containers:
            ax.bar_label(bars, fontsize=8)
        ax.set_xlabel("")
        fig.suptitle(_title("Figure 1. Class distribution per split", about), fontsize=10)
    return fig


def fig_client_distribution(counts: pd.DataFrame, about: str) -> Figure:
    """Stacked bars: each client's images, split by class."""
    classes = [c for c in counts.columns if c not in ("client", "total")]
    with _style():
        fig, axes = _figure(6.5, 4)
        ax = axes[0, 0]
        bottom = np.zeros(len(counts))
        for i, c in enumerate(classes):
            ax.bar(counts["client"].astype(str), counts[c], bottom=bottom, label=c, color=_PALETTE[i + 2])
            bottom += counts[c].to_numpy()
        ax.set_xlabel("client")
        ax.set_ylabel("training images")
        ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.suptitle(_title("Class distribution per client", about), fontsize=10)
    return fig


def sample_images(data, cfg, split: str = "train", per_class: int = 3) -> list[dict]:
    """A few random images per class (seeded by ``cfg.seed``), read from the image files at full size.

    Each item: ``image`` (uint8 HxW), ``label`` (class name), ``filename``, and
    ``mask`` (bool HxW lesion mask, synthetic data only, else None).
    """
    layout = Layout() if data.synthetic else cfg.layout  # as fedlib.data.resolve reads them
    records, image_dir = read_split(data.root, split, layout)
    labels = np.asarray([r.label for r in records])
    rng = np.random.default_rng(cfg.seed)
    synthetic = is_synthetic(data.root)
    out = []
    for k, name in enumerate(data.classes):
        idx = np.flatnonzero(labels == k)
        for i in rng.choice(idx, size=min(per_class, len(idx)), replace=False):
            rec = records[int(i)]
            out.append({
                "image": np.asarray(load_image(image_dir / rec.filename).convert("L")),
                "label": name,
                "filename": rec.filename,
                "mask": load_mask(data.root, split, rec.filename) if synthetic else None,
            })
    return out


def fig_samples(samples: list[dict], about: str) -> Figure:
    """A grid of sample images, one row per class; lesion masks outlined in red."""
    classes = list(dict.fromkeys(s["label"] for s in samples)) or ["(none)"]
    ncols = max([sum(s["label"] == c for s in samples) for c in classes] + [1])
    with _style("white"):
        fig, axes = _figure(2.0 * ncols + 0.5, 2.1 * len(classes) + 0.8, len(classes), ncols)
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
        fig.suptitle(_title(f"Sample images per class{note}", about), fontsize=10)
    return fig


# ---------------------------------------------------------------- 01: one run


def fig_run_history(history: pd.DataFrame, about: str) -> Figure:
    """Training and test loss, and test accuracy, of one run per round (epoch when pooled)."""
    with _style():
        fig, axes = _figure(9, 3.5, 1, 2)
        loss_ax, acc_ax = axes[0]
        per_client = "client" in history and history["client"].notna().any()
        groups = history.groupby("client") if per_client else [(None, history)]
        for client, h in groups:
            suffix = "" if client is None else f" (client {client})"
            loss_ax.plot(h["round"], h["train_loss"], marker="o", markersize=3, label="train" + suffix)
            if "test_loss" in h:
                t = h.dropna(subset=["test_loss"])
                loss_ax.plot(t["round"], t["test_loss"], marker="s", markersize=3, linestyle="--", label="test" + suffix)
                acc_ax.plot(t["round"], t["test_accuracy"], marker="o", markersize=3, label="test" + suffix)
        if history.empty:
            _empty_note(loss_ax, "no history yet")
            _empty_note(acc_ax, "no history yet")
        else:
            loss_ax.set_ylabel("loss")
            acc_ax.set_ylabel("test accuracy")
            acc_ax.set_ylim(0, 1)
            for ax in (loss_ax, acc_ax):
                ax.set_xlabel("round (epoch when pooled)")
                _integer_x(ax)
                ax.legend(fontsize=8)
        fig.suptitle(_title("Training history", about), fontsize=10)
    return fig


def final_metrics_table(final: dict) -> pd.DataFrame:
    """Train and test metrics of one run (train on un-augmented images), one row per split."""
    classes = final.get("classes", [])
    rows = []
    for split in ("train", "test"):
        m = final[split]
        rows.append({"split": split, "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
                     **{f"sensitivity {c}": m[f"sensitivity_{slug(c)}"] for c in classes},
                     "loss": m.get("loss", float("nan")), "images": m.get("n")})
    df = pd.DataFrame(rows)
    df.attrs["caption"] = f"Final metrics. {describe_final(final)}."
    return df


# ---------------------------------------------------------------- 02: loss curves


def fig3_fl_loss(histories: dict[str, pd.DataFrame], about: str, models: Sequence[str] | None = None) -> Figure:
    """The paper's Figure 3: federated training loss per round, one line per model."""
    with _style():
        fig, axes = _figure(6.5, 4.2)
        ax = axes[0, 0]
        shown = _ordered(histories, models)
        for m in shown:
            h = histories[m]
            ax.plot(h["round"], h["train_loss"], marker="o", markersize=3, label=_name(m), color=MODEL_COLORS.get(m))
        if shown:
            ax.set_xlabel("federated round")
            _integer_x(ax)
            ax.set_ylabel("training loss (mean over sampled clients)")
            ax.legend()
        else:
            _empty_note(ax)
        fig.suptitle(_title("Figure 3. Federated training loss", about, _missing(histories, models, "fedavg")),
                     fontsize=10)
    return fig


def fig5_fl_vs_pooled_loss(fed: dict[str, pd.DataFrame], pooled: dict[str, pd.DataFrame], about: str,
                           models: Sequence[str] | None = None) -> Figure:
    """The paper's Figure 5: FedAvg beside pooled training loss, one panel per model.

    The x axis is epochs of equal compute: FedAvg round r (E local epochs per
    client) sits at r x E, beside pooled epoch r x E (the ``epoch`` column).
    """
    shown = list(dict.fromkeys(_ordered(fed, models) + _ordered(pooled, models)))
    missing = _missing(fed, models, "fedavg") + _missing(pooled, models, "central")
    with _style():
        fig, axes = _panel_grid(len(shown), 2, 4.2, 3.3, 0.9)
        for ax, m in zip(axes.flat, shown, strict=False):
            for mode, runs in (("fedavg", fed), ("central", pooled)):
                if m in runs:
                    h = runs[m]
                    ax.plot(h["epoch"], h["train_loss"], marker="o", markersize=3, color=MODE_COLORS[mode],
                            label=MODE_NAMES[mode])
            ax.set_title(_name(m), fontsize=10)
            ax.set_xlabel("epoch (FedAvg: round × E)")
            _integer_x(ax)
            ax.set_ylabel("training loss")
            ax.legend()
        fig.suptitle(_title("Figure 5. Federated vs pooled training loss", about, missing), fontsize=10)
    return fig


# ---------------------------------------------------------------- 03: accuracy tables


def _annotate(df: pd.DataFrame, title: str, about: str, missing: Sequence[str]) -> pd.DataFrame:
    """Attach the caption (and the missing runs, for the figure drawn from the table)."""
    text = f"{title} {about}."
    df.attrs["caption"] = text + (f" Missing (no finished run): {', '.join(missing)}." if missing else "")
    df.attrs["missing"] = list(missing)
    return df


def table2_fl_accuracy(finals: dict[str, dict], about: str, models: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's Table 2: FedAvg train and test accuracy and parameter count per model."""
    rows = [{"model": _name(m), "params": int(finals[m]["params"]),
             "params_millions": finals[m]["params"] / 1e6,
             "train_accuracy": finals[m]["train"]["accuracy"], "test_accuracy": finals[m]["test"]["accuracy"]}
            for m in _ordered(finals, models)]
    df = pd.DataFrame(rows, columns=["model", "params", "params_millions", "train_accuracy", "test_accuracy"])
    return _annotate(df, "Table 2. Accuracy with federated learning (train: un-augmented images).",
                     about, _missing(finals, models, "fedavg"))


def table3_per_label(finals: dict[str, dict], about: str, models: Sequence[str] | None = None,
                     split: str = "test") -> pd.DataFrame:
    """The paper's Table 3: per-label accuracy (per-class sensitivity) with FedAvg, one row per model."""
    shown = _ordered(finals, models)
    classes = list(finals[shown[0]]["classes"]) if shown else list(CLASSES)
    rows = [{"model": _name(m), **{c: finals[m][split][f"sensitivity_{slug(c)}"] for c in classes}} for m in shown]
    df = pd.DataFrame(rows, columns=["model", *classes])
    df.attrs["split"] = split
    return _annotate(df, f"Table 3. Per-label accuracy (sensitivity on the {split} set) with "
                     "federated learning.", about, _missing(finals, models, "fedavg"))


def fig4_per_label_accuracy(per_label: pd.DataFrame, about: str) -> Figure:
    """The paper's Figure 4: grouped bars of per-label accuracy, one group per class."""
    long = per_label.melt(id_vars="model", var_name="class", value_name="sensitivity")
    split = per_label.attrs.get("split", "test")
    colors = {_name(m): c for m, c in MODEL_COLORS.items()}
    with _style():
        fig, axes = _figure(7, 4.2)
        ax = axes[0, 0]
        if long.empty:
            _empty_note(ax)
        else:
            sns.barplot(long, x="class", y="sensitivity", hue="model", palette=colors, ax=ax)
            for bars in ax.containers:
                ax.bar_label(bars, fmt="%.2f", fontsize=7)
            ax.set_ylim(0, 1.22)  # headroom for the legend above the bars
            ax.set_xlabel("")
            ax.set_ylabel(f"per-label accuracy ({split} sensitivity)")
            ax.legend(fontsize=8, loc="upper center", ncol=4)
        fig.suptitle(_title("Figure 4. Per-label accuracy with federated learning", about,
                            per_label.attrs.get("missing", [])), fontsize=10)
    return fig


def table4_pooled_accuracy(finals: dict[str, dict], about: str, models: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's Table 4: accuracy without federated learning (pooled data)."""
    rows = [{"model": _name(m), "train_accuracy": finals[m]["train"]["accuracy"],
             "test_accuracy": finals[m]["test"]["accuracy"]} for m in _ordered(finals, models)]
    df = pd.DataFrame(rows, columns=["model", "train_accuracy", "test_accuracy"])
    return _annotate(df, "Table 4. Accuracy without federated learning (pooled training).",
                     about, _missing(finals, models, "central"))


def table_gap(fed: dict[str, dict], pooled: dict[str, dict], epsilon: float, about: str,
              models: Sequence[str] | None = None) -> pd.DataFrame:
    """|V_FED - V_SUM| per model and split, against the tolerance ``epsilon``.

    V_FED is the FedAvg model's accuracy, V_SUM the pooled model's; the paper
    asks whether federated learning stays within epsilon of pooling the data.
    """
    both = [m for m in _ordered(fed, models) if m in pooled]
    rows = []
    for m in both:
        row = {"model": _name(m)}
        for split in ("train", "test"):
            v_fed, v_sum = fed[m][split]["accuracy"], pooled[m][split]["accuracy"]
            row.update({f"{split}_fed": v_fed, f"{split}_pooled": v_sum, f"{split}_gap": abs(v_fed - v_sum)})
        row["epsilon"] = epsilon
        row["test_within_epsilon"] = bool(row["test_gap"] <= epsilon)
        rows.append(row)
    columns = ["model", "train_fed", "train_pooled", "train_gap", "test_fed", "test_pooled", "test_gap",
               "epsilon", "test_within_epsilon"]
    df = pd.DataFrame(rows, columns=columns)
    missing = _missing(fed, models, "fedavg") + _missing(pooled, models, "central")
    return _annotate(df, f"Gap |V_FED - V_SUM| between federated and pooled accuracy, "
                     f"against epsilon = {epsilon:g}.", about, missing)


def fig_confusion(finals: dict[str, dict], about: str, models: Sequence[str] | None = None,
                  split: str = "test") -> Figure:
    """Confusion matrices (rows true, columns predicted) of the FedAvg models, one panel per model."""
    shown = _ordered(finals, models)
    with _style("white"):
        fig, axes = _panel_grid(len(shown), 4, 3.4, 3.2, 1.0)
        for ax, m in zip(axes.flat, shown, strict=False):
            classes = finals[m]["classes"]
            cm = np.asarray(finals[m][split]["confusion"])
            sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, square=True, ax=ax,
                        xticklabels=classes, yticklabels=classes)
            ax.set_title(f"{_name(m)} (accuracy {finals[m][split]['accuracy']:.3f})", fontsize=9)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
        fig.suptitle(_title(f"Confusion matrices on the {split} set, federated learning", about,
                            _missing(finals, models, "fedavg")), fontsize=10)
    return fig
