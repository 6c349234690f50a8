"""The synthetic validation of the attack as a registered experiment (experiments/poison_synthetic.py):
its config refuses what the science cannot run, and its summary is the geometric-mean ratio over the
seeds whose poisoned run fit."""

import math
from dataclasses import replace

import numpy as np
import pytest

from implicitbias.experiments import poison_synthetic as ps


@pytest.mark.parametrize("field, value, match", [
    ("cell", "per_theorem/L7", "beyond_theorem"),
    ("cell", "beyond_theorem/L6/special", "without /special"),
    ("cell", "no/such", "table1 preset"),
    ("eps", 0.0, "eps must be > 0"),
    ("n_poisons", 9, "n_poisons must be in 1..8"),
    ("horizon", 6, "horizon must exceed L"),
    ("mode", "append", "mode must be one of"),
    ("train_optimizer", "sgdd", "train_optimizer must be one of"),
    ("seeds", (-1,), "seeds must be non-negative"),
])
def test_bad_config_values_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        replace(ps.Config(), **{field: value})


def _seed(clean, matched, fits):
    return {"clean": {"error": clean, "fits": True}, "matched": {"error": matched, "fits": fits, "energy_share": 0.5}}


def test_the_ratio_to_clean_is_the_geometric_mean_over_fitting_seeds():
    per_seed = [_seed(0.1, 0.4, True), _seed(0.2, 0.2, True), _seed(0.1, 9.0, False)]
    out = ps.summary(per_seed, ("matched",))
    assert out["matched_ratio_to_clean"] == pytest.approx(math.sqrt(4.0 * 1.0), rel=1e-15)
    assert out["matched_runs_that_fit"] == 2 and out["clean_runs_that_fit"] == 3
    assert out["matched_mean_error"] == pytest.approx(np.mean([0.4, 0.2, 9.0]), rel=1e-15)
    assert out["matched_energy_share"] == [0.5] * 3 and "clean_energy_share" not in out
    assert ps.summary([_seed(0.1, 0.4, False)], ("matched",))["matched_ratio_to_clean"] is None


@pytest.mark.slow
def test_a_tiny_run_keeps_the_budget_and_the_controls_energy():
    cfg = replace(ps.PRESETS["beyond_theorem/L6"], seeds=(200,), penalties=(0.0,), iterations=2, restarts=1)
    rec = ps.run(cfg)
    matched = rec.arrays["delta_matched"]
    assert matched.shape == (1, cfg.n_poisons, 6) and np.abs(matched).max() <= cfg.eps * (1 + 1e-12)
    for control in ("random_uniform", "random_end"):  # same l2 norm per poison (same_norm_random)
        np.testing.assert_allclose(np.linalg.norm(rec.arrays[f"delta_{control}"], axis=-1),
                                   np.linalg.norm(matched, axis=-1), rtol=1e-12)
    assert rec.metrics["seeds"] == [200] and rec.metrics["clean_ratio_to_clean"] == 1.0
