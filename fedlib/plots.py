"""One function per figure and table of the paper, plus the helpers that feed them.

The data figures (00) take plain data; the figures and tables of a reproduction
(02, 03) take the finished runs of ``fedlib.results.find_runs`` (one per model,
mode and seed) and return a ``matplotlib.figure.Figure`` or a ``DataFrame``
whose ``attrs["caption"]`` says what it shows. Every number comes from a run
directory (``config.json``, ``final.json``, ``history.csv``), never from the
paper's text.

Titles and captions are read from the runs themselves: which data set
(synthetic or COVIDx, image counts), profile, image size and how many seeds
stand behind each number; runs of two data sets refuse to share a title
(``results.check_one_dataset``). With several seeds a table gives mean ± sd
over seeds and the per-seed values (``attrs["per_seed"]``, written beside it
as ``<name>_per_seed.csv``); figures draw one line or point per seed. A run
whose balanced accuracy is at chance (``fedlib.metrics.CHANCE_MARGIN``) is
flagged in tables and titles.

A missing run is not an error: each function draws the runs it was given and
names the expected ones it did not get.

Figures are built on ``Figure()`` rather than pyplot, so nothing is shown or
kept alive behind the caller's back; a notebook displays the returned figure.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import results
from .data.covidx import CLASSES, Layout, load_image, read_split
from .data.synthetic import is_synthetic, load_mask
from .metrics import CHANCE_MARGIN, slug
from .models import DISPLAY_NAMES, MODEL_NAMES
from .results import LAST_EVALS, Run
from .runs import atomic_write_bytes, atomic_write_text

# One look for every figure: applied around each figure's construction, not globally.
STYLE = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("notebook", font_scale=0.9),
    "figure.dpi": 100,
    "axes.titleweight": "bold",
}
_PALETTE = sns.color_palette("colorblind", 10)
MODEL_COLORS = {m: _PALETTE[i] for i, m in enumerate(MODEL_NAMES)}
MODE_COLORS = {"fedavg": _PALETTE[0], "central": _PALETTE[1], "local": _PALETTE[2]}
MODE_NAMES = {"fedavg": "FedAvg", "central": "pooled", "local": "local only"}
SPLIT_COLORS = {"train": _PALETTE[0], "test": _PALETTE[1]}
FIG_DPI = 150  # saved PNGs: sharp enough for a paper, small enough for git
TABLE_DIGITS = 3  # Markdown tables of a reproduction: 0.812 ± 0.021
LAST = f"test_accuracy_last{LAST_EVALS}"  # column: mean test accuracy over the last evaluations
COVID = slug("COVID-19")
TITLE_WIDTH = 120  # characters per title line before it wraps (long lists of missing runs)


# ---------------------------------------------------------------- describing runs


def seeds_phrase(runs: Sequence[Run]) -> str:
    """How many seeds stand behind each number: "1 seed (seed 0)", "mean ± sd over 3 seeds
    (0, 1, 2)", or the range when models and modes got different numbers of seeds."""
    counts: dict[tuple, int] = {}
    for r in runs:
        counts[(r.model, r.mode)] = counts.get((r.model, r.mode), 0) + 1
    if not counts:
        return "no finished runs"
    seeds = ", ".join(str(s) for s in sorted({r.seed for r in runs}))
    low, high = min(counts.values()), max(counts.values())
    if high == 1:
        return f"1 seed (seed {seeds})" if len({r.seed for r in runs}) == 1 else f"1 seed each (seeds {seeds})"
    if low == high:
        return f"mean ± sd over {high} seeds ({seeds})"
    return f"mean ± sd over {low} to {high} seeds per model and mode (seeds {seeds}; 1 seed: no sd)"


def describe_runs(runs: Sequence[Run]) -> str:
    """One line for titles, read from the runs: data set, profile, image size, seeds.

    Refuses runs of two data sets, profiles or image sizes (``results.check_one_dataset``)
    and two runs of one (model, mode, seed) (``results.check_unique``).
    """
    runs = list(runs)
    results.check_one_dataset(runs)
    results.check_unique(runs)
    if not runs:
        return "no finished runs"
    size = runs[0].config.get("image_size")
    return " · ".join(
        [
            " / ".join(sorted({str(r.final.get("data_description", "unknown data")) for r in runs})),
            f"profile {runs[0].config.get('profile', runs[0].final.get('profile'))}",
            f"{size}×{size} px",
            seeds_phrase(runs),
        ]
    )


def describe_final(final: dict) -> str:
    """One line for the title of a single run's figure."""
    model = DISPLAY_NAMES.get(final["model"], final["model"])
    return (
        f"{model} {MODE_NAMES.get(final['mode'], final['mode'])} · {final['data_description']} · "
        f"profile {final['profile']} · seed {final['seed']}"
    )


def describe_data(data, cfg) -> str:
    """One line for the data figures: what data set, how it is split among clients."""
    return (
        f"{data.description} · profile {cfg.profile} · seed {cfg.seed} · "
        f"{cfg.partition} partition into {cfg.clients} clients"
    )


# ---------------------------------------------------------------- saving

# No creation date (nor, in SVG, random ids): the same figure gives the same bytes.
_STABLE_METADATA = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}}


def write_figure(fig: Figure, path, dpi: int = FIG_DPI) -> Path:
    """Write one figure file atomically; the suffix picks the format. PNG, PDF and SVG
    files are byte-stable: drawing the same figure again rewrites the same bytes."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    buf = io.BytesIO()
    with mpl.rc_context({"svg.hashsalt": "fedlib"}):
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_STABLE_METADATA.get(fmt))
    atomic_write_bytes(path, buf.getvalue())
    return path


def save_figure(fig: Figure, figures_dir, name: str) -> list[Path]:
    """Write ``<name>.png`` and ``<name>.pdf`` atomically; returns both paths."""
    return [write_figure(fig, Path(figures_dir) / f"{name}.{ext}") for ext in ("png", "pdf")]


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table; floats rounded to ``digits``, NaN shown as a dash.

    A column ``X`` with a column ``X_sd`` beside it is shown as one cell ``mean ± sd``
    (just the mean where the sd is NaN: one seed).
    """

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        return "–" if v is None else str(v)

    sd = {c: f"{c}_sd" for c in df.columns if f"{c}_sd" in df.columns}
    shown = [c for c in df.columns if c not in sd.values()]

    def value(row: dict, c) -> str:
        text = cell(row[c])
        s = row.get(sd.get(c))
        if c in sd and isinstance(s, float | np.floating) and not math.isnan(s) and text != "–":
            text += f" ± {s:.{digits}f}"
        return text

    lines = ["| " + " | ".join(map(str, shown)) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(value(row, c) for c in shown) + " |" for row in df.to_dict("records")]
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, figures_dir, name: str, digits: int | None = None) -> list[Path]:
    """Write ``<name>.csv`` (full precision) and ``<name>.md`` (caption + rounded table) atomically,
    and ``<name>_per_seed.csv`` (one row per run) when the table carries ``attrs["per_seed"]``.

    ``digits`` defaults to the table's ``attrs["digits"]``, else 4.
    """
    digits = digits if digits is not None else df.attrs.get("digits", 4)
    figures_dir = Path(figures_dir)
    csv_path, md_path = figures_dir / f"{name}.csv", figures_dir / f"{name}.md"
    atomic_write_text(csv_path, df.to_csv(index=False))
    caption = df.attrs.get("caption")
    atomic_write_text(md_path, (f"{caption}\n\n" if caption else "") + markdown_table(df, digits))
    paths = [csv_path, md_path]
    if "per_seed" in df.attrs:
        per_seed = figures_dir / f"{name}_per_seed.csv"
        atomic_write_text(per_seed, pd.DataFrame(df.attrs["per_seed"]).to_csv(index=False))
        paths.append(per_seed)
    return paths


# ---------------------------------------------------------------- helpers


def _style(axes_style: str = "whitegrid"):
    """The project's look for the figure built inside the ``with`` block."""
    return mpl.rc_context({**STYLE, **sns.axes_style(axes_style)})


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _panel_grid(count: int, max_cols: int, panel_w: float, panel_h: float, extra_h: float) -> tuple[Figure, np.ndarray]:
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


def _title(title: str, about: str, missing: Sequence[str] = (), *notes: str) -> str:
    lines = [title, about]
    if missing:
        lines.append("missing (no finished run): " + ", ".join(missing))
    lines += [n for n in notes if n]
    return "\n".join(textwrap.fill(line, TITLE_WIDTH, break_on_hyphens=False) for line in lines)


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
                loss_ax.plot(
                    t["round"], t["test_loss"], marker="s", markersize=3, linestyle="--", label="test" + suffix
                )
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


# ---------------------------------------------------------------- 02 and 03: the runs of a reproduction

FED, POOLED = "fedavg", "central"
CHANCE_RULE = (
    f"at chance: test balanced accuracy at most 1/classes + {CHANCE_MARGIN:g} "
    "(what predicting one class for every image scores); its accuracy is then that class's "
    "share of the test set and shows no learning"
)


def _select(runs: Sequence[Run], mode: str, models: Sequence[str] | None = None) -> list[Run]:
    """The runs of one mode (and of ``models``), ordered by model (as listed) and seed."""
    order = list(models) if models is not None else list(MODEL_NAMES)
    chosen = [r for r in runs if r.mode == mode and (models is None or r.model in models)]
    return sorted(chosen, key=lambda r: (order.index(r.model) if r.model in order else len(order), r.model, r.seed))


def _by_model(runs: Sequence[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.model, []).append(r)
    return out


def _missing(
    runs: Sequence[Run], models: Sequence[str] | None, modes: Sequence[str], seeds: Sequence[int] | None = None
) -> list[str]:
    """Expected runs without a finished run: ``<model>-<mode>`` when no seed has finished,
    else ``<model>-<mode> (seeds 1, 2)``."""
    if models is None:
        return []
    out = []
    for m in models:
        for mode in modes:
            got = {r.seed for r in runs if r.model == m and r.mode == mode}
            if not got:
                out.append(f"{m}-{mode}")
            elif seeds is not None and (lost := [str(s) for s in seeds if int(s) not in got]):
                out.append(f"{m}-{mode} (seed{'s' if len(lost) > 1 else ''} {', '.join(lost)})")
    return out


def chance_note(runs: Sequence[Run]) -> str:
    """A title line naming each model and mode with runs at chance; empty when none is."""
    groups: dict[tuple, list[bool]] = {}
    for r in runs:
        groups.setdefault((r.model, r.mode), []).append(results.run_metrics(r)["at_chance"])
    modes = list(MODE_NAMES)
    flagged = [
        f"{_name(m)} {MODE_NAMES.get(mode, mode)}" + (f" ({sum(f)} of {len(f)} seeds)" if len(f) > 1 else "")
        for (m, mode), f in sorted(
            groups.items(), key=lambda kv: modes.index(kv[0][1]) if kv[0][1] in modes else len(modes)
        )
        if any(f)
    ]
    if not flagged:
        return ""
    return f"AT CHANCE (balanced accuracy ≤ 1/classes + {CHANCE_MARGIN:g}): " + ", ".join(flagged)


def _metrics(runs: Sequence[Run]) -> pd.DataFrame:
    rows = results.metrics_table(list(runs))
    return rows if not rows.empty else pd.DataFrame(columns=["model", "seed", "at_chance"])


def _seed_summary(rows: pd.DataFrame, columns: dict[str, str], by_seed: str | None = None) -> pd.DataFrame:
    """One row per model (in the order of ``rows``): how many seeds, the mean over seeds of each of
    ``columns`` (per-run column -> table column) with its sd beside it (``<column>_sd``, NaN for
    one seed), ``by_seed`` listed per seed, and how many seeds are at chance. The sd and per-seed
    columns are left out when every model has one seed. ``attrs["per_seed"]`` keeps the rows."""
    names = list(columns.values())
    listed = f"{columns[by_seed]}_by_seed" if by_seed else None
    order = ["model", "seeds"]
    for src, dst in columns.items():
        order += [dst, f"{dst}_sd"] + ([listed] if src == by_seed else [])
    order.append("seeds_at_chance")
    records = []
    for model, g in rows.groupby("model", sort=False):
        rec: dict = {"model": _name(model), "seeds": len(g), "seeds_at_chance": int(g["at_chance"].sum())}
        for src, dst in columns.items():
            values = g[src].to_numpy(dtype=float)
            rec[dst] = float(values.mean())  # NaN when a seed lacks it: no mean of the others
            rec[f"{dst}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        if listed:
            rec[listed] = ", ".join(f"s{int(s)} {v:.3f}" for s, v in zip(g["seed"], g[by_seed], strict=True))
        records.append(rec)
    df = pd.DataFrame(records, columns=order)
    if not len(df) or (df["seeds"] <= 1).all():
        df = df.drop(columns=[f"{n}_sd" for n in names] + ([listed] if listed else []))
    per_seed = rows.reindex(columns=["model", "seed", *columns, "at_chance"]).rename(columns=columns)
    per_seed["model"] = [_name(m) for m in per_seed["model"]]
    df.attrs["per_seed"] = per_seed.to_dict("records")
    df.attrs["digits"] = TABLE_DIGITS
    return df


def _annotate(df: pd.DataFrame, title: str, runs: Sequence[Run], missing: Sequence[str], *notes: str) -> pd.DataFrame:
    """Attach the caption: what, on which data and seeds, what the columns mean, what is missing."""
    multi = "seeds" in df and len(df) and (df["seeds"] > 1).any()
    parts = [title, f"{describe_runs(runs)}."]
    if multi:
        parts.append(
            "Cells: mean ± sd over seeds; *_by_seed lists each seed (s<seed> value); every "
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


_ACCURACY_COLUMNS = {
    "train_accuracy": "train_accuracy",
    "test_accuracy": "test_accuracy",
    "test_balanced_accuracy": "test_balanced_accuracy",
    f"test_sensitivity_{COVID}": f"test_{COVID}_sensitivity",
    LAST: LAST,
}
_ACCURACY_NOTE = (
    f"Train: un-augmented training images. test_balanced_accuracy: mean per-class sensitivity; "
    f"test_{COVID}_sensitivity: share of COVID-19 test images called COVID-19; {LAST}: mean test "
    f"accuracy over the last {LAST_EVALS} evaluations (the last one alone is a noisy point)."
)


def table2_fl_accuracy(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> pd.DataFrame:
    """The paper's Table 2: FedAvg accuracy and parameter count per model, over seeds."""
    fed = _select(runs, FED, models)
    rows = _metrics(fed)
    df = _seed_summary(rows, _ACCURACY_COLUMNS, by_seed="test_accuracy")
    params = [int(rows.loc[rows["model"] == m, "params"].iloc[0]) for m in dict.fromkeys(rows["model"])]
    df.insert(2, "params", params)
    df.insert(3, "params_millions", [p / 1e6 for p in params])
    return _annotate(
        df,
        "Table 2. Accuracy with federated learning (FedAvg).",
        fed,
        _missing(runs, models, [FED], seeds),
        _ACCURACY_NOTE,
    )


def table4_pooled_accuracy(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> pd.DataFrame:
    """The paper's Table 4: accuracy without federated learning (pooled data), over seeds."""
    pooled = _select(runs, POOLED, models)
    df = _seed_summary(_metrics(pooled), _ACCURACY_COLUMNS, by_seed="test_accuracy")
    return _annotate(
        df,
        "Table 4. Accuracy without federated learning (pooled training).",
        pooled,
        _missing(runs, models, [POOLED], seeds),
        _ACCURACY_NOTE,
    )


def table3_per_label(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None, split: str = "test"
) -> pd.DataFrame:
    """The paper's Table 3: per-label accuracy (per-class sensitivity on ``split``) with FedAvg,
    one row per model, one column per class."""
    fed = _select(runs, FED, models)
    classes = list(fed[0].final["classes"]) if fed else list(CLASSES)
    columns = {f"{split}_sensitivity_{slug(c)}": c for c in classes}
    covid = f"{split}_sensitivity_{COVID}"
    df = _seed_summary(_metrics(fed), columns, by_seed=covid if covid in columns else None)
    df.attrs["split"] = split
    return _annotate(
        df,
        f"Table 3. Per-label accuracy (sensitivity on the {split} set) with federated learning.",
        fed,
        _missing(runs, models, [FED], seeds),
    )


def _ratio_text(ratios: Sequence[float]) -> str:
    ratios = [r for r in ratios if not math.isnan(r)]
    if not ratios:
        return "the runs do not record their sample passes"
    low, high = min(ratios), max(ratios)
    span = f"{low:.2f}x" if high - low < 0.005 else f"{low:.2f}x to {high:.2f}x"
    verdict = "about equal compute" if all(abs(r - 1) <= 0.05 for r in ratios) else "not an equal-compute comparison"
    return f"pooled training made {span} FedAvg's sample passes ({verdict})"


def _verdict(n: int, fed_at_chance: int, pooled_at_chance: int, gap: float, epsilon: float) -> str:
    """The gap table's verdict for one model over ``n`` paired seeds; no verdict on a gap when
    either mode has a run at chance."""
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
    return "within epsilon" if gap <= epsilon else "outside epsilon"


def table_gap(
    runs: Sequence[Run], epsilon: float, models: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> pd.DataFrame:
    """|V_FED - V_SUM| per model against the tolerance ``epsilon``, over seeds.

    V_FED is the FedAvg model's test accuracy, V_SUM the pooled model's; the paper asks
    whether federated learning stays within epsilon of pooling the data. The FedAvg and
    pooled runs of one seed are paired; the verdict reads the mean gap over the pairs. A
    model at chance in either mode gets no verdict: two majority-class predictors agree
    to the last digit without having learned anything. Beside it: the pooled budget rule
    and the ratio of pooled to FedAvg sample passes (last rows of history.csv).
    """
    fed = {(r.model, r.seed): r for r in _select(runs, FED, models)}
    pooled = {(r.model, r.seed): r for r in _select(runs, POOLED, models)}
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
                len(g), int(g["fed_at_chance"].sum()), int(g["pooled_at_chance"].sum()), df["test_gap"].iloc[i], epsilon
            )
        )
        budgets.append(" / ".join(sorted({str(b) for b in g["pooled_budget"]})))
    at = (
        df.columns.get_loc("balanced_gap_sd") + 1 if "balanced_gap_sd" in df else df.columns.get_loc("balanced_gap") + 1
    )
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
        "the verdict reads the mean gap.",
        chosen,
        _missing(runs, models, [FED, POOLED], seeds),
        "A model at chance in either mode is not compared (verdict 'not compared'): its accuracy is the "
        "majority class's share, and two such runs agree without having learned.",
        ratio,
    )


def _history_lines(ax, runs: Sequence[Run], x: str, y: str, color, label: str, gid_prefix: str) -> None:
    """One line per run (thin when there are several) and, with several, their mean per round."""
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
        mean = pd.concat([r.history[[x, y]] for r in drawn]).groupby(x)[y].mean()
        ax.plot(
            mean.index,
            mean.to_numpy(),
            color=color,
            marker="o",
            markersize=3,
            linewidth=1.8,
            label=f"{label} (mean of {len(drawn)} seeds)",
            gid=f"{gid_prefix}-mean",
        )


def fig3_fl_loss(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> Figure:
    """The paper's Figure 3: federated training loss per round, one line per model (per seed,
    thin, with their mean when there are several)."""
    fed = _select(runs, FED, models)
    with _style():
        fig, axes = _figure(6.5, 4.4)
        ax = axes[0, 0]
        for m, rs in _by_model(fed).items():
            _history_lines(ax, rs, "round", "train_loss", MODEL_COLORS.get(m), _name(m), f"{m}-{FED}")
        if fed:
            ax.set_xlabel("federated round")
            _integer_x(ax)
            ax.set_ylabel("training loss (mean over sampled clients)")
            ax.legend(fontsize=8)
        else:
            _empty_note(ax)
        fig.suptitle(
            _title(
                "Figure 3. Federated training loss",
                describe_runs(fed),
                _missing(runs, models, [FED], seeds),
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
    shown = _select(runs, FED, models) + _select(runs, POOLED, models)
    order = list(dict.fromkeys(r.model for r in _select(shown, FED, models) + _select(shown, POOLED, models)))
    order = [m for m in (models if models is not None else MODEL_NAMES) if m in order] + [
        m for m in order if m not in (models if models is not None else MODEL_NAMES)
    ]
    with _style():
        fig, axes = _panel_grid(len(order), 2, 4.4, 3.4, 1.3)
        for ax, m in zip(axes.flat, order, strict=False):
            for mode in (FED, POOLED):
                _history_lines(
                    ax,
                    [r for r in shown if r.model == m and r.mode == mode],
                    "sample_passes",
                    "train_loss",
                    MODE_COLORS[mode],
                    MODE_NAMES[mode],
                    f"{m}-{mode}",
                )
            ratio = _passes_ratio(shown, m)
            ax.set_title(_name(m) + ("" if math.isnan(ratio) else f" · pooled/FedAvg passes {ratio:.2f}x"), fontsize=9)
            ax.set_xlabel("training images processed (sample passes)")
            ax.set_ylabel("training loss")
            ax.legend(fontsize=8)
        fig.suptitle(
            _title(
                "Figure 5. Federated vs pooled training loss, against training images processed",
                describe_runs(shown),
                _missing(runs, models, [FED, POOLED], seeds),
                "x: sample passes (FedAvg round r ≈ r·E·C·N, pooled epoch e = e·N), "
                "so equal x is equal compute; rounds and epochs are not",
                chance_note(shown),
            ),
            fontsize=10,
        )
    return fig


def fig4_per_label_accuracy(
    runs: Sequence[Run], models: Sequence[str] | None = None, seeds: Sequence[int] | None = None, split: str = "test"
) -> Figure:
    """The paper's Figure 4: grouped bars of per-label accuracy (sensitivity) with FedAvg, one
    group per class; with several seeds the bar is the mean, the whisker the sd, dots the seeds."""
    fed = _select(runs, FED, models)
    classes = list(fed[0].final["classes"]) if fed else list(CLASSES)
    long = pd.DataFrame(
        [
            {
                "model": _name(r.model),
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
    colors = {_name(m): c for m, c in MODEL_COLORS.items()}
    with _style():
        fig, axes = _figure(7, 4.4)
        ax = axes[0, 0]
        if long.empty:
            _empty_note(ax)
        else:
            sns.barplot(
                long,
                x="class",
                y="sensitivity",
                hue="model",
                order=classes,
                hue_order=names,
                palette=colors,
                errorbar="sd" if several else None,
                capsize=0.1,
                err_kws={"linewidth": 1},
                ax=ax,
            )
            for bars in ax.containers:
                ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
            if several:
                sns.stripplot(
                    long,
                    x="class",
                    y="sensitivity",
                    hue="model",
                    order=classes,
                    hue_order=names,
                    palette={n: "0.15" for n in names},
                    dodge=True,
                    size=3,
                    legend=False,
                    ax=ax,
                )
            ax.set_ylim(0, 1.22)  # headroom for the legend above the bars
            ax.set_xlabel("")
            ax.set_ylabel(f"per-label accuracy ({split} sensitivity)")
            ax.legend(fontsize=8, loc="upper center", ncol=4)
        fig.suptitle(
            _title(
                "Figure 4. Per-label accuracy with federated learning"
                + (" (bars: mean, whiskers: sd, dots: seeds)" if several else ""),
                describe_runs(fed),
                _missing(runs, models, [FED], seeds),
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
    fed = _select(runs, FED, models)
    groups = _by_model(fed)
    several = any(len(rs) > 1 for rs in groups.values())
    with _style("white"):
        fig, axes = _panel_grid(len(groups), 4, 3.4, 3.3, 1.2)
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
            ax.set_title(f"{_name(m)} (accuracy {text}){flag}", fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
        summed = " (counts summed over seeds)" if several else ""
        fig.suptitle(
            _title(
                f"Confusion matrices on the {split} set, federated learning{summed}",
                describe_runs(fed),
                _missing(runs, models, [FED], seeds),
                chance_note(fed),
            ),
            fontsize=10,
        )
    return fig
