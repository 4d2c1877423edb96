"""The one writer of the report: figures as PNG/PDF (or SVG) and tables as CSV + Markdown.

Every other module of ``fedlib.report`` returns figures and tables; only this one writes files,
each atomically and byte-stable (drawing the same figure again rewrites the same bytes).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..errors import UserError
from ..run.io import atomic_write_bytes, atomic_write_text

FIG_DPI = 150  # saved PNGs: sharp enough for a paper, small enough for git

# No creation date (nor, in SVG, random ids): the same figure gives the same bytes.
_STABLE_METADATA = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}}


def write_figure(fig: Figure, path, dpi: int = FIG_DPI) -> Path:
    """Write one figure file atomically; the suffix picks the format (a user error when
    matplotlib cannot write it). PNG, PDF and SVG files are byte-stable: drawing the same
    figure again rewrites the same bytes."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        raise UserError(f"cannot write a figure as {path.name}; use a .png or .pdf file name.")
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
    (just the mean where the sd is NaN: one seed), followed by ``[low, high]`` when an
    ``X_ci95`` (the half-width of a confidence interval) is there too.
    """

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        return "–" if v is None else str(v)

    sd = {c: f"{c}_sd" for c in df.columns if f"{c}_sd" in df.columns}
    shown = [c for c in df.columns if c not in sd.values() and not (c.endswith("_ci95") and c[:-5] in sd)]

    def number(v) -> bool:
        return isinstance(v, float | np.floating) and not math.isnan(v)

    def value(row: dict, c) -> str:
        text = cell(row[c])
        s, half = row.get(sd.get(c)), row.get(f"{c}_ci95")
        if c in sd and number(s) and text != "–":
            text += f" ± {s:.{digits}f}"
            if number(half):
                text += f" [{row[c] - half:.{digits}f}, {row[c] + half:.{digits}f}]"
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
