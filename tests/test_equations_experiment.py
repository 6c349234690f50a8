"""The equations GRPO experiment (experiments/equations.py): its config's refusals, the warm-up's coverage of
every label and prompt size, and (slow) the smoke preset end to end, deterministic."""

import numpy as np
import pytest

from implicitbias.experiments import equations as ex
from implicitbias.tasks import equations as eq


@pytest.mark.parametrize("kw, match", [
    (dict(family="huge"), "family"),
    (dict(mixtures=("1-3",)), "mixtures"),
    (dict(family="mini", mixtures=("1-14",)), "mixtures"),
    (dict(group=1), "group"),
    (dict(d_model=60, n_heads=8), "even head size"),
    (dict(lr=0.0), "learning rates"),
    (dict(seeds=()), "seed"),
])
def test_bad_configs_are_refused_with_a_message(kw, match):
    with pytest.raises(ValueError, match=match):
        ex.Config(**kw)


@pytest.mark.parametrize("family", ["full", "mini"])
def test_the_warm_up_sees_every_prompt_size_and_label_of_training_and_test(family):
    c = ex.PRESETS[f"{family}/all"]
    sizes = {(lay.n_chains, lay.chain_len) for lay in c.warmup_layouts()}
    wanted = {(lay.n_chains, lay.chain_len) for lay in (*c.layouts().values(), c.test_layout())}
    assert sizes == wanted
    assert max(lay.max_label for lay in c.warmup_layouts()) == c.test_layout().max_label
    # every warm-up layout holds 1-2-step instances (chains of 3 or more)
    assert all(lay.chain_len >= 3 for lay in c.warmup_layouts())


def test_the_mini_family_halves_the_talks_mixtures():
    assert {k: (v.min_steps, v.max_steps) for k, v in ex.MINI_MIXTURES.items()} == {
        "1-7": (1, 7), "1-4": (1, 4), "1-2": (1, 2), "7": (7, 7)}
    assert ex.MINI_TEST.n_chains == 1 and ex.MINI_TEST.chain_len == 16 and ex.MINI_TEST.max_steps == 7
    assert {k: v.chain_len for k, v in eq.MIXTURES.items()} == {"1-14": 15, "1-9": 10, "1-4": 5, "14": 15}


@pytest.mark.slow  # ~22 s: compiles the warm-up, GRPO and evaluation for three layouts
def test_the_smoke_preset_runs_end_to_end_and_is_deterministic():
    c = ex.PRESETS["smoke"]
    a, b = ex.run_seed(c, 0), ex.run_seed(c, 0)
    assert a["warmup"]["history"] == b["warmup"]["history"]
    for name in c.mixtures:
        ha, hb = a["mixtures"][name]["history"], b["mixtures"][name]["history"]
        assert [r["reward"] for r in ha] == [r["reward"] for r in hb] and len(ha) == c.grpo_steps
        assert all(0 <= r["reward"] <= 2 and np.isfinite(r["loss"]) for r in ha)
        assert set(a["mixtures"][name]["per_complexity"]) == {str(d) for d in range(1, 8)}
