"""The analysis notebooks' parameters, checked in their first cell: a parameter of the wrong
type (papermill's ``-p seeds 0`` gives a string, ``-p epsilon -1`` a negative tolerance) is one
line naming it, before any run is read or any figure written."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import UserError, quoted


def check(**parameters) -> None:
    """Check each given notebook parameter by its name (runs_dir, figures_dir, models, seeds,
    epsilon); an unknown name is a bug of the notebook."""
    for name, value in parameters.items():
        ok, wanted = _RULES[name](value)
        if not ok:
            raise UserError(f"notebook parameter {name} must be {wanted}, got {quoted(value)}.")


def _folder(value) -> tuple[bool, str]:
    return isinstance(value, str | Path) and str(value) != "", "a folder path (text)"


def _models(value) -> tuple[bool, str]:
    from ..models import MODEL_NAMES

    wanted = f"a list of model names ({', '.join(MODEL_NAMES)})"
    return isinstance(value, list | tuple) and bool(value) and all(m in MODEL_NAMES for m in value), wanted


def _seeds(value) -> tuple[bool, str]:
    ints = isinstance(value, list | tuple) and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    return value is None or (ints and bool(value) and min(value) >= 0), "None or a list of non-negative integers"


def _epsilon(value) -> tuple[bool, str]:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value >= 0, "a finite non-negative number"


_RULES = {"runs_dir": _folder, "figures_dir": _folder, "models": _models, "seeds": _seeds, "epsilon": _epsilon}
