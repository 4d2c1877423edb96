"""Statistics over seeds that the tables and figures share."""

from __future__ import annotations

import math

import numpy as np


def ci95(values) -> float:
    """Half-width of the 95% confidence interval of the mean of ``values`` (one per seed), from
    Student's t with n - 1 degrees of freedom; NaN for fewer than two values."""
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return float("nan")
    return float(t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))
