"""One line that says what a figure or table stands on: which data, profile, image size, seeds,
which runs are at chance. Every word is read from the runs (``config.json``, ``final.json``),
never from the paper's text.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..metrics import CHANCE_MARGIN
from ..models import DISPLAY_NAMES
from ..run import results
from ..run.results import Run
from .selection import as_run
from .style import MODE_NAMES, display_name

CHANCE_RULE = (
    f"at chance: test balanced accuracy at most 1/classes + {CHANCE_MARGIN:g} "
    "(what predicting one class for every image scores); its accuracy is then that class's "
    "share of the test set and shows no learning"
)


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


def describe_runs(runs: Sequence, compact: bool = False) -> str:
    """One line for titles, read from the runs: data set, profile, image size, seeds.

    Refuses runs of two data sets, profiles or image sizes (``results.check_one_dataset``)
    and two runs of one (model, mode, seed) (``results.check_unique``).

    compact: '<data description>, profile <p>, <s> px input' of the first run (runs or run
    directories; no check), as the Grad-CAM++ figures and the localisation table say it.
    """
    runs = list(runs)
    if compact:
        if not runs:
            return "no runs"
        first = as_run(runs[0])
        data = first.final.get("data_description") or first.config.get("data", "?")
        return f"{data}, profile {first.config.get('profile', '?')}, {first.config.get('image_size', '?')} px input"
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


def chance_note(runs: Sequence[Run]) -> str:
    """A title line naming each model and mode with runs at chance; empty when none is."""
    groups: dict[tuple, list[bool]] = {}
    for r in runs:
        groups.setdefault((r.model, r.mode), []).append(results.run_metrics(r)["at_chance"])
    modes = list(MODE_NAMES)
    flagged = [
        f"{display_name(m)} {MODE_NAMES.get(mode, mode)}" + (f" ({sum(f)} of {len(f)} seeds)" if len(f) > 1 else "")
        for (m, mode), f in sorted(
            groups.items(), key=lambda kv: modes.index(kv[0][1]) if kv[0][1] in modes else len(modes)
        )
        if any(f)
    ]
    if not flagged:
        return ""
    return f"AT CHANCE (balanced accuracy ≤ 1/classes + {CHANCE_MARGIN:g}): " + ", ".join(flagged)
