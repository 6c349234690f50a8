"""Paired t-test p-values and Holm's correction (stats.py) against scipy and the step-down procedure."""

import numpy as np
import pytest
from scipy import stats

from implicitbias.core.stats import holm, t_test_pvalue


@pytest.mark.parametrize("seed", range(5))
def test_t_test_pvalue_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(0.3 * seed, 1.0, size=5 + seed)
    # float64 rounding bound: two evaluations of one closed form (the t statistic, then the t tail)
    # with different special-function code; p-values of 0.03 to 0.84 are well conditioned, so they
    # agree to ~1e3 eps64 (here: exactly); rel 1e-12 still catches a one- vs two-sided p-value or a
    # wrong degrees of freedom (relative changes >= 1e-2)
    assert t_test_pvalue(v) == pytest.approx(stats.ttest_1samp(v, 0.0).pvalue, rel=1e-12)


def test_t_test_pvalue_edge_cases():
    assert np.isnan(t_test_pvalue([0.4]))
    # by definition: no variance gives p = 1 for a zero mean, else 0 (three 0.1 leave s ~ 1e-17, which
    # stats.py treats as 0 below 1e-12 |mean|, 1e3 times the rounding bound n eps64 |mean| at n = 3)
    assert t_test_pvalue([0.0, 0.0, 0.0]) == 1.0
    assert t_test_pvalue([0.1, 0.1, 0.1]) == 0.0


def _holm_rejects(p, alpha):
    """The step-down procedure itself: reject the smallest p-values while p_(k) <= alpha / (m - k)."""
    order = np.argsort(p, kind="stable")
    rejected = set()
    for k, i in enumerate(order):
        if p[i] > alpha / (len(p) - k):
            break
        rejected.add(int(i))
    return rejected


@pytest.mark.parametrize("seed", range(6))
def test_holm_adjusted_pvalues_reproduce_the_procedure(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, size=3 + 2 * seed) ** 2
    adj = np.asarray(holm(p))
    # exact comparisons: Holm's adjusted values are products (m - k) p_(k) and maxima of them, and
    # _holm_rejects compares p_(k) <= alpha / (m - k); with these seeds every (m - k) p_(k) and every
    # adjusted p is at least 2% (relative) away from every alpha, so rounding (eps64) cannot move a rejection
    assert np.all(adj >= p) and np.all(adj <= 1.0)
    for alpha in (0.001, 0.01, 0.02, 0.05, 0.1):
        assert {int(i) for i in np.flatnonzero(adj <= alpha)} == _holm_rejects(p, alpha)


def test_holm_hand_example_and_nan():
    # pytest.approx's default rel 1e-6: products of short decimals, exact to a few eps64
    # m = 3: sorted 0.01, 0.02, 0.04 -> 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04
    assert holm([0.04, 0.01, float("nan"), 0.02]) == pytest.approx([0.04, 0.03, float("nan"), 0.04], nan_ok=True)
    assert holm([0.5, 0.9]) == [1.0, 1.0]
