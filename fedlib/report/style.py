"""The one look of the reproduction's figures and the helpers that build them.

Figures are built on ``Figure()`` rather than pyplot, so nothing is shown or kept alive
behind the caller's back; a notebook displays the returned figure.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..models import DISPLAY_NAMES, MODEL_NAMES

# One look for every figure: applied around each figure's construction, not globally.
STYLE = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("notebook", font_scale=0.9),
    "figure.dpi": 100,
    "axes.titleweight": "bold",
}

PALETTE = sns.color_palette("colorblind", 10)

MODEL_COLORS = {m: PALETTE[i] for i, m in enumerate(MODEL_NAMES)}

MODE_COLORS = {"fedavg": PALETTE[0], "central": PALETTE[1], "local": PALETTE[2]}

MODE_NAMES = {"fedavg": "FedAvg", "central": "pooled", "local": "local only"}

SPLIT_COLORS = {"train": PALETTE[0], "val": PALETTE[5], "test": PALETTE[1]}

TITLE_WIDTH = 120  # characters per title line before it wraps (long lists of missing runs)


def styled(axes_style: str = "whitegrid"):
    """The project's look for the figure built inside the ``with`` block."""
    return mpl.rc_context({**STYLE, **sns.axes_style(axes_style)})


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def panel_grid(count: int, max_cols: int, panel_w: float, panel_h: float, extra_h: float) -> tuple[Figure, np.ndarray]:
    """One panel per shown model (unused panels hidden); a note when nothing is shown."""
    n = max(count, 1)
    ncols = min(n, max_cols)
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(panel_w * ncols, panel_h * nrows + extra_h, nrows, ncols)
    for ax in axes.flat[count:]:
        ax.axis("off")
    if not count:
        axes[0, 0].axis("on")
        empty_note(axes[0, 0])
    return fig, axes


def suptitle(title: str, about: str, missing: Sequence[str] = (), *notes: str) -> str:
    lines = [title, about]
    if missing:
        lines.append("missing (no finished run): " + ", ".join(missing))
    lines += [n for n in notes if n]
    return "\n".join(textwrap.fill(line, TITLE_WIDTH, break_on_hyphens=False) for line in lines)


def display_name(model: str) -> str:
    return DISPLAY_NAMES.get(model, model)


def integer_x(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def empty_note(ax, text: str = "no finished runs") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])
