"""Summary statistics over seeds: means, Student-t intervals, multiple-comparison corrections."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _scipy_stats


def mean_std(values) -> tuple[float, float]:
    """Mean and population std (``ddof=0``, as over the paper's 4 seeds) of finite-or-not values."""
    arr = np.asarray(values, dtype=float)
    return float(np.mean(arr)), float(np.std(arr))


def bonferroni_level(level: float, comparisons: int) -> float:
    """The per-comparison confidence level that keeps the family-wise level ``level`` over
    ``comparisons`` intervals (Bonferroni: ``1 - (1 - level) / comparisons``)."""
    if not 0 < level < 1 or comparisons < 1:
        raise ValueError(f"need 0 < level < 1 and comparisons >= 1, got {level}, {comparisons}")
    return 1.0 - (1.0 - level) / comparisons


def t_interval(values, level: float = 0.95, comparisons: int = 1) -> tuple[float, float]:
    """``(mean, half_width)`` of the two-sided Student-t interval over ``values``
    (``half_width = t_{(1+l)/2, n-1} * s / sqrt(n)``, ``s`` with ``ddof=1``; NaN for one value),
    at the Bonferroni-corrected level ``l`` for ``comparisons`` simultaneous intervals."""
    v = np.asarray(values, float)
    n = v.size
    mean = float(np.mean(v)) if n else float("nan")
    if n < 2:
        return mean, float("nan")
    s = float(np.std(v, ddof=1))
    lvl = bonferroni_level(level, comparisons)
    return mean, float(_scipy_stats.t.ppf(0.5 + lvl / 2, n - 1) * s / math.sqrt(n))
