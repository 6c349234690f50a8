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


def t_test_pvalue(values) -> float:
    """Two-sided p-value of the one-sample Student t-test of ``mean(values) = 0`` (for paired
    differences: the paired t-test), ``t = mean / (s / sqrt(n))`` with ``s`` at ``ddof=1`` and
    ``n - 1`` degrees of freedom. NaN for fewer than two values; 1 when every value is 0, 0 when
    they are all equal and nonzero (``s = 0`` up to rounding)."""
    v = np.asarray(values, float)
    n = v.size
    if n < 2:
        return float("nan")
    mean, s = float(np.mean(v)), float(np.std(v, ddof=1))
    if s <= 1e-12 * abs(mean) or s == 0.0:  # equal values: the mean's rounding leaves s ~ 1e-17
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (s / math.sqrt(n))
    return float(2.0 * _scipy_stats.t.sf(abs(t), n - 1))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control over every p-value given):
    sorted ascending ``p_(1) <= ... <= p_(m)``, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``,
    returned in the input order. Rejecting where ``adj < alpha`` is Holm's procedure at level alpha.
    NaN entries are left out of the family and stay NaN."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()
