"""Defenses: each detector on a hand-made case with a known answer, the evaluation
against brute force, the training-time defenses against direct computations, and the pipeline
leaving a clean set unchanged when nothing is flagged."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicitbias.core import metrics
from implicitbias.defend import detectors as det
from implicitbias.defend import synthetic as syn
from implicitbias.defend.detection import auroc, flag, gap_flags, recall_at_k, roc_curve
from implicitbias.defend.training import DPOptimizer, Noisy, circular_shifts, clipped_loss
from implicitbias.core.optim import make_optimizer
from implicitbias.core.ssm import DiagonalSSM, unit_teacher



# ------------------------------------------------------------------ evaluation


def brute_auroc(s, y):
    pos, neg = s[y], s[~y]
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])


def test_auroc_equals_brute_force_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 30))
        s = rng.integers(0, 5, n).astype(float)  # many ties
        y = rng.random(n) < 0.4
        if y.all() or not y.any():
            continue
        # ratios of integer pair counts (<= 900 pairs), computed two ways: a few eps64; abs 1e-12, while
        # one pair counted wrong moves the AUROC by >= 1/900
        assert auroc(s, y) == pytest.approx(brute_auroc(s, y), abs=1e-12)
        fpr, tpr = roc_curve(s, y)
        assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(s, y), abs=1e-12)
    assert auroc([3, 2, 1], [True, False, False]) == 1.0
    assert auroc([1, 2, 3], [True, False, False]) == 0.0
    assert math.isnan(auroc([1, 2], [False, False]))


def test_recall_at_true_count_shares_ties():
    y = np.array([True, True, False, False])
    assert recall_at_k([4, 3, 2, 1], y) == 1.0
    assert recall_at_k([4, 1, 3, 2], y) == 0.5
    # all tied: expected recall of a random pick of 2 from 4 with 2 positives
    assert recall_at_k([1, 1, 1, 1], y) == 0.5
    # one sure hit, then 1 pick among a tie of 1 positive and 1 negative
    assert recall_at_k([5, 1, 1, 0], y) == pytest.approx(0.75)  # closed form (1 + 1/2) / 2, float64


def test_flag_rules():
    assert not gap_flags(np.zeros(8)).any()  # a clean set of equal scores: nothing flagged
    s = np.array([0.0, 0.1, 0.05, 0.9, 1.0])
    assert gap_flags(s).tolist() == [False, False, False, True, True]
    assert not gap_flags(np.linspace(0, 1, 10)).any()  # no clear split
    assert flag(s, "threshold", 0.5).tolist() == [False, False, False, True, True]
    assert not flag(s, "none").any()


# ------------------------------------------------------------------ theory-guided detectors


def test_energy_tail_hand_case():
    X = np.array([[1.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 2.0, 0], [1.0, 0, 0, 0, 1.0, 1.0], [0.0] * 6])
    # closed forms: ratios of small integer sums, exact or an ulp off (approx's rel 1e-6)
    assert det.energy_tail(X, 2).tolist() == pytest.approx([0.0, 1.0, 2 / 3, 0.0])
    assert det.tail_window(6) == 2 and det.tail_window(10) == 4 and det.tail_window(7) == 3


def test_nongreedy_share_hand_case():
    L = 6
    rows = np.zeros((5, L))
    rows[0, 4] = 3.0  # position L-2: gamma^(0) only
    rows[1, 3] = -1.0  # position L-3: gamma^(1) only
    rows[2, 0] = 1.0  # position 0: gamma^(4), a greedy term
    rows[3, 5] = 1.0  # position L-1 meets h_1: no power of a at all
    rows[4, [0, 4]] = 1.0  # weights (l+1): 5 at l=4, 1 at l=0
    # closed forms on small integers (approx's rel 1e-6 >> eps64); the share read off the gamma
    # terms is the same ratio in float64, a few eps64 apart
    assert det.nongreedy_share(rows).tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0, 1 / 6])
    # the same share read off the per-example gamma terms at any residual
    c = np.abs(np.asarray(det.gamma_contributions(np.full(5, 0.7), np.ones(5), rows)))
    share = np.where(c.sum(1) > 0, c[:, :2].sum(1) / np.maximum(c.sum(1), 1e-300), 0.0)
    assert det.nongreedy_share(rows) == pytest.approx(share)


def test_gamma_contributions_sum_to_the_gamma_coefficients():
    rng = np.random.default_rng(1)
    X, r, xi = rng.normal(size=(7, 6)), rng.normal(size=7), rng.normal(size=7)
    c = det.gamma_contributions(r, xi, X)
    # float64: the same sums of 7 terms in other orders, relative error ~7 eps64 times the condition
    # sum|terms| / |sum| (4.3 for these draws): rel 1e-12 (4.5e3 eps64). A wrong position is off by O(1).
    assert np.asarray(c.sum(0)) == pytest.approx(np.asarray(jax.jit(metrics.gamma_coefficients)(r, xi, X)), rel=1e-12)
    # gamma0 magnitude: residual y - ssm(X) at a model, position L-2 only
    ssm = DiagonalSSM(jnp.array([0.3, 0.1]), jnp.array([1.0, 0.5]), jnp.array([0.2, 1.0]))
    y = rng.normal(size=7)
    resid = y - np.asarray(ssm(jnp.asarray(X)))
    assert det.gamma0_magnitude(ssm, X, y) == pytest.approx(np.abs(2.0 / 7 * resid * X[:, 4]), rel=1e-12)


# ------------------------------------------------------------------ model-based scores


def _ssm():
    return DiagonalSSM(jnp.array([0.5, 0.2, -0.3]), jnp.array([1.0, 0.4, 0.7]), jnp.array([0.3, 1.2, 0.5]))


def test_per_example_grads_average_to_the_loss_gradient():
    rng = np.random.default_rng(2)
    X, y = jnp.asarray(rng.normal(size=(5, 6))), jnp.asarray(rng.normal(size=5))
    ssm = _ssm()
    G = det.per_example_grads(ssm, X, y)
    g = jax.jit(jax.grad(lambda m: jnp.mean((m(X) - y) ** 2)))(ssm)
    # float64: a mean of 5 per-example gradients vs the batch gradient, ~5 eps64 times their
    # condition; rel 1e-10. Norms and losses: the same float64 values (approx's rel 1e-6)
    assert np.asarray(G.mean(0)) == pytest.approx(np.asarray(det._flat(g)), rel=1e-10)
    assert det.grad_norm_scores(ssm, X, y) == pytest.approx(np.linalg.norm(np.asarray(G), axis=1))
    assert det.loss_scores(ssm, X, y) == pytest.approx((np.asarray(ssm(X)) - np.asarray(y)) ** 2)


def test_influence_is_the_first_order_change_of_R():
    rng = np.random.default_rng(3)
    X, y = jnp.asarray(rng.normal(size=(4, 6))), jnp.asarray(rng.normal(size=4))
    ssm = _ssm()
    R = det.log_tail_energy(6, 20)
    per = np.asarray(det.influence_at(jax.tree_util.tree_map(lambda v: v[None], ssm), X, y, R))[0]
    G = det.per_example_grads(ssm, X, y)
    eps = 1e-6
    Rj = jax.jit(R)
    for n in range(4):
        a, B, C = np.split(np.asarray(G[n]), 3)
        step = DiagonalSSM(ssm.a - eps * a, ssm.B - eps * B, ssm.C - eps * C)
        # forward difference, step 1e-6 along the gradient: truncation ~eps |R''| |G|^2 / 2 relative to
        # the slope (~1e-6 to 1e-5) plus rounding eps64 |R| / 1e-6 ~ 1e-10: rel 1e-4 holds both
        assert (float(Rj(step)) - float(Rj(ssm))) / eps == pytest.approx(per[n], rel=1e-4)
    # unnormalised, one checkpoint: the score is that vector
    assert det.influence([ssm], X, y, R, normalize=False) == pytest.approx(per)


def test_final_states_read_out_the_model():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3, 6))
    ssm = _ssm()
    F = det.final_states(ssm, X)
    # float64 recurrences of 6 steps with |a| <= 0.5, in other orders: ~10 eps64 relative; rel 1e-12
    assert F @ np.asarray(ssm.C) == pytest.approx(np.asarray(ssm(jnp.asarray(X))), rel=1e-12)
    x = np.zeros(3)  # the recurrence itself
    for t in range(6):
        x = np.asarray(ssm.a) * x + np.asarray(ssm.B) * X[0, t]
    assert F[0] == pytest.approx(x, rel=1e-12)


# ------------------------------------------------------------------ feature-space baselines


def test_spectral_signature_matches_an_eigendecomposition_and_finds_the_outliers():
    rng = np.random.default_rng(5)
    F = np.concatenate([rng.normal(0, 0.1, (20, 3)), np.array([[5.0, 0, 0]] * 3) + rng.normal(0, 0.1, (3, 3))])
    labels = np.zeros(23, int)
    s = det.spectral_signature(F, labels)
    M = F - F.mean(0)
    w, V = np.linalg.eigh(M.T @ M)
    # float64 eigenvectors of a 3x3 matrix with a well separated top eigenvalue (67 vs 0.21): the SVD and
    # eigh agree to ~eps64 * cond ~1e-13; rel 1e-9. Scores are squares, so the sign is irrelevant.
    assert s == pytest.approx((M @ V[:, -1]) ** 2, rel=1e-9)
    assert set(np.argsort(s)[-3:]) == {20, 21, 22}
    # per class: a second class far away does not change the first class's scores
    F2 = np.concatenate([F, rng.normal(100, 1, (5, 3))])
    s2 = det.spectral_signature(F2, np.r_[labels, np.ones(5, int)])
    assert s2[:23] == pytest.approx(s, rel=1e-9)


def test_activation_clustering_flags_a_small_cluster_only():
    rng = np.random.default_rng(6)
    F = np.concatenate([rng.normal(0, 0.1, (20, 4)), rng.normal(3, 0.1, (5, 4))])
    scores, flags = det.activation_clustering(F, np.zeros(25, int))
    assert flags.tolist() == [False] * 20 + [True] * 5
    assert scores[20:].min() > scores[:20].max()
    F = np.concatenate([rng.normal(0, 0.1, (12, 4)), rng.normal(3, 0.1, (13, 4))])
    _, flags = det.activation_clustering(F, np.zeros(25, int))
    assert not flags.any()  # two halves: no cluster small enough to be poison


def test_deep_knn_flags_a_point_among_the_other_class():
    rng = np.random.default_rng(7)
    F = np.concatenate([rng.normal(0, 0.1, (10, 2)), rng.normal(5, 0.1, (10, 2)), [[0.0, 0.0]]])
    labels = np.r_[np.zeros(10, int), np.ones(10, int), [1]]
    scores, flags = det.deep_knn(F, labels, k=5)
    assert flags.tolist() == [False] * 20 + [True]
    assert scores[-1] == 1.0 and scores[:20].max() <= 0.2  # fractions of k = 5 neighbours: exact


def test_tail_deviation_finds_a_perturbed_copy_and_its_twin():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(6, 8))
    labels = np.array([0, 0, 0, 1, 1, 1])
    poison = X[0].copy()
    poison[-2:] += 0.5  # perturbation on the last 2 of 8 positions
    X = np.concatenate([X, poison[None]])
    labels = np.r_[labels, 0]
    s = det.tail_deviation(X, labels, last_frac=0.25)
    # scores normalised to the largest (1 exactly for the pair); the others are separated by O(0.1)
    assert s[6] == pytest.approx(1.0) and s[0] == pytest.approx(1.0)  # the pair finds each other
    assert s[[1, 2, 3, 4, 5]].max() < 1.0
    assert det.input_norm(X[:2]) == pytest.approx(np.linalg.norm(X[:2], axis=1))


# ------------------------------------------------------------------ training-time defenses


def _data(rng, n=6, L=5, pad=2):
    X = rng.normal(size=(n + pad, L))
    X[n:] = 0.0
    w = np.r_[np.ones(n), np.zeros(pad)]
    y = np.asarray(unit_teacher()(jnp.asarray(X)))
    return {"X": jnp.asarray(X), "y": jnp.asarray(y), "w": jnp.asarray(w), "n": jnp.asarray(float(n))}


def test_clipped_loss_value_and_gradient_against_direct_clipping():
    rng = np.random.default_rng(9)
    data = _data(rng)
    ssm = _ssm()
    noisy = Noisy(ssm, jnp.asarray(1 / 6), jnp.asarray(0.0))
    q = 0.5
    value, g = jax.jit(jax.value_and_grad(clipped_loss(q)))(noisy, data)
    # float64 rounding bounds: the same means and quantile (linear interpolation) in other orders,
    # ~10 eps64 times the condition; rel 1e-12 for the loss, 1e-9 for the clipped gradient and the
    # threshold (a division by norms of size ~1 adds its own eps64). A clip at another quantile or
    # per-batch clipping is off by O(0.1).
    n = 6
    X, y = data["X"][:n], data["y"][:n]
    assert float(value) == pytest.approx(float(jnp.mean((ssm(X) - y) ** 2)), rel=1e-12)
    G = np.asarray(det.per_example_grads(ssm, X, y))
    norms = np.linalg.norm(G, axis=1)
    clip = np.quantile(norms, q)  # linear interpolation, as the loss computes it
    expected = (G * np.minimum(1.0, clip / norms)[:, None]).mean(0)
    assert np.asarray(det._flat(g.model)) == pytest.approx(expected, rel=1e-9)
    assert float(g.aux) == pytest.approx(clip, rel=1e-9)
    assert float(g.seed) == 0.0


def test_dp_optimizer_without_noise_is_the_inner_update_and_noise_is_reproducible():
    rng = np.random.default_rng(10)
    data = _data(rng)
    noisy = Noisy(_ssm(), jnp.asarray(1 / 6), jnp.asarray(3.0))
    g = jax.jit(jax.grad(clipped_loss(0.5)))(noisy, data)
    inner = make_optimizer("gd", 0.1)
    opt = DPOptimizer(inner, 0.0)
    upd, _ = jax.jit(opt.update)(g, jax.jit(opt.init)(noisy), noisy)
    ref, _ = inner.update(g.model, inner.init(noisy.model), noisy.model)
    # noise 0: the same float64 products (approx's rel 1e-6 >> eps64); the same seed gives the same draw
    assert np.asarray(det._flat(upd.model)) == pytest.approx(np.asarray(det._flat(ref)))
    assert float(upd.aux) == 0.0 and float(upd.seed) == 0.0
    opt = DPOptimizer(inner, 1.0)
    update, init = jax.jit(opt.update), jax.jit(opt.init)
    u1, s1 = update(g, init(noisy), noisy)
    u2, _ = update(g, init(noisy), noisy)
    u3, _ = update(g, s1, noisy)
    noise = np.asarray(det._flat(u1.model)) - np.asarray(det._flat(ref))
    assert np.abs(noise).max() > 0
    assert np.asarray(det._flat(u1.model)) == pytest.approx(np.asarray(det._flat(u2.model)))  # same seed, same step
    assert not np.allclose(np.asarray(det._flat(u1.model)), np.asarray(det._flat(u3.model)))  # next step: new draw


def test_circular_shifts_keep_the_unit_teachers_labels():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(3, 5))
    y = np.asarray(unit_teacher()(jnp.asarray(X)))
    Xs, ys, ws = circular_shifts(X, y, np.array([1.0, 0.0, 1.0]), 5)
    assert Xs.shape == (15, 5) and ws.tolist() == [1.0, 0.0, 1.0] * 5
    assert Xs[3 + 1] == pytest.approx(np.roll(X[1], 1))  # a permutation: exact
    # y* = sum u: invariant under shifts up to the float64 summation order, 5 eps64 times the condition
    assert ys == pytest.approx(np.asarray(unit_teacher()(jnp.asarray(Xs))), rel=1e-12)


# ------------------------------------------------------------------ the pipeline


def _fake_train(calls):
    """A stand-in for training: error and model are functions of (seed, kept rows) only."""

    def train(task, inits, runs, opts, kind="plain"):
        calls.append(len(runs))
        out = []
        for s, _X, _y, w in runs:
            err = float(1 + s + np.dot(w, np.arange(1, w.size + 1)))
            model = DiagonalSSM(jnp.full(task.d, 0.1), jnp.full(task.d, 0.1), jnp.full(task.d, 0.1))
            out.append(syn.Trained(err, True, False, 10, model, [model]))
        return out

    return train


def test_pipeline_leaves_a_clean_set_unchanged_when_nothing_is_flagged(monkeypatch):
    from implicitbias.experiments import defense

    calls = []
    monkeypatch.setattr(syn, "train_sets", _fake_train(calls))
    cfg = defense.Config(seeds=(0, 1), detectors=("nongreedy_share", "energy_tail", "input_norm"),
                         training_defenses=())
    out = syn.run(cfg.task(), cfg.options())
    for name in ("nongreedy_share", "energy_tail"):
        d = out["detectors"][name]
        assert d["n_flagged_clean"] == [0, 0]
        assert d["error_clean_defended"] == out["error_clean"]  # nothing flagged: the clean run itself
        assert d["auroc"] == [1.0, 1.0] and d["n_flagged"] == [10, 10]
        assert d["error_defended"] == out["error_clean"]  # exactly the special rows removed: the clean set
    # the clean and poisoned sets are trained once each; a removal equal to a known set is not retrained
    assert calls[0] == 4 and out["runs_trained"] == 4 + sum(calls[1:])
    assert out["error_clean"] != out["error_poisoned"]


@pytest.mark.slow
def test_pipeline_real_training_zero_rows_are_removal():
    """Real training on one seed of beyond_theorem/L6: a set with rows weighted 0 trains exactly as
    the set without them, and the sanitised run equals the clean run when exactly the special rows
    are flagged."""
    from implicitbias.experiments import defense

    cfg = defense.Config(seeds=(200,), detectors=("nongreedy_share",), training_defenses=(), max_steps=20_000)
    task = cfg.task()
    opts = cfg.options()
    X, y, sp = syn.seed_data(task, 200)
    init = syn.seed_init(task, 200)
    (a,) = syn.train_sets(task, [init], [(0, X, y, (~sp).astype(float))], opts)
    (b,) = syn.train_sets(task, [init], [(0, X[~sp], y[~sp], np.ones((~sp).sum()))], opts)
    # zero-weight rows add exact zeros to float64 sums; the means divide by the same n, so the runs agree
    # up to summation order (a few eps64 per update, damped by the converging GD): rel 1e-9
    assert a.error == pytest.approx(b.error, rel=1e-9)
    out = syn.run(task, opts)
    d = out["detectors"]["nongreedy_share"]
    assert d["error_defended"] == out["error_clean"] and d["error_clean_defended"] == out["error_clean"]
    assert out["error_poisoned"][0] > 10 * out["error_clean"][0]  # the paper's effect (orders of magnitude)


def test_report_rows_carry_per_seed_lists(monkeypatch, tmp_path):
    from implicitbias.experiments import defense
    from implicitbias.record import Record
    from implicitbias.report import defense as section
    from implicitbias.runtime.store import Store

    monkeypatch.setattr(syn, "train_sets", _fake_train([]))
    cfg = defense.Config(seeds=(0, 1), detectors=("nongreedy_share", "random"), training_defenses=())
    out = syn.run(cfg.task(), cfg.options())
    store = Store(tmp_path)
    store.save(defense.NAME, cfg, Record({"kind": "synthetic", "cell": cfg.cell, **out}, {}), preset="synthetic/x",
               wall_seconds=1.0)
    rows = section.rows(list(store.runs(defense.NAME)))
    assert [r["detector"] for r in rows] == ["nongreedy_share", "random"]
    r = rows[0]
    assert r["experiment"] == "defense" and r["preset"] == "synthetic/x" and r["seeds"] == [0, 1]
    assert r["auroc"] == [1.0, 1.0] and r["error_clean"] == out["error_clean"]
    assert r["error_poisoned"] == out["error_poisoned"] and r["error_defended"] == out["error_clean"]
    assert r["seeds_within_2x_clean"] == 2 and r["clean_cost"] == 1.0
    assert r["roc"][0] == 1.0  # a perfect detector: every special found before any false positive
    md = section.markdown(rows, tmp_path)
    assert "| nongreedy_share | 1.000 / 1.000 | 1.00 | 10.0 (10.0) |" in md


_TINY_CELLS = {
    # ours: retrain rounds; the authors': extended retraining, redrawn clean rows, a pool larger than n_train
    "realworld/s4d/digits/mean": dict(d_model=8, d_state=4, n_layers=1, epochs=2, n_train=120, n_targets=20,
                                      iterations=2, max_rounds=1, extra_epochs=1),
    "realworld/authors-cpu/s4d/italypower": dict(d_model=8, d_state=4, n_layers=1, epochs=2, iterations=2,
                                                 n_targets=20, n_high_targets=6, group_size=3, max_extra_epochs=2),
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(_TINY_CELLS))
def test_realworld_cell_on_a_tiny_run(monkeypatch, preset):
    """The real-world path end to end at toy size: penultimate features are what the head reads,
    every detector gets a per-seed AUROC, removal retrains, and a detector that flags nothing on the
    clean set leaves its error unchanged."""
    from dataclasses import replace

    from implicitbias.defend import realworld as rw
    from implicitbias.experiments import defense
    from implicitbias.experiments import realworld as rwx
    from implicitbias.models import ClassifierConfig, make_classifier

    model = make_classifier(ClassifierConfig(d_model=8, d_state=4, n_layers=1), 0)
    x = np.random.default_rng(0).normal(size=(5, 64, 1)).astype(np.float32)
    F = rw.penultimate(model, x)
    logits = np.asarray(jax.vmap(model)(jnp.asarray(x)))
    # float32: the head applied to the returned features vs inside the model, differing in the order of
    # a length-8 dot product: <= 9 eps32 sum|W h| ~ 1e-6 (features ~1); rel 1e-4, abs 1e-5 are 10x that
    assert np.asarray(jax.vmap(model.head)(jnp.asarray(F))) == pytest.approx(logits, rel=1e-4, abs=1e-5)

    cfg = replace(defense.PRESETS[preset], seeds=(0,))
    tiny = replace(rwx.PRESETS[cfg.cell], **_TINY_CELLS[preset])
    monkeypatch.setitem(rwx.PRESETS, cfg.cell, tiny)
    out = defense.run_realworld(cfg)
    assert set(out["detectors"]) == set(rw.DETECTORS) and out["n_poisons"] == tiny.n_poisons
    for name, d in out["detectors"].items():
        assert 0.0 <= d["auroc"][0] <= 1.0
        if d["n_flagged_clean"][0] == 0:
            assert d["error_clean_defended"] == out["error_clean"], name
        if d["n_flagged"][0] == 0:
            assert d["error_defended"] == out["error_poisoned"], name
        assert 0 <= d["n_poison_flagged"][0] <= min(d["n_flagged"][0], tiny.n_poisons)
    # the random detector's expected AUROC is 1/2: far from 0 or 1 on hundreds of examples (a statistical
    # bound: its standard deviation sqrt((n1 + n0 + 1) / (12 n1 n0)) is 0.046 at 60 poisons / 120 clean
    # rows and 0.026 at 160 / 320, so 0.3-0.7 is > 4 of them)
    assert 0.3 < out["detectors"]["random"]["auroc"][0] < 0.7


def test_realworld_rows_holm_over_the_comparisons_that_test_something():
    """Real-world defense rows: paired t-tests of defended - poisoned, defended - clean and the clean-set
    cost, Holm-adjusted together with each cell's poisoned - clean; a detector that removed nothing in any
    seed adds no comparison (its defended model is the poisoned one)."""
    from implicitbias.report import defense as section
    from implicitbias.core.stats import holm, t_test_pvalue

    clean, pois = [0.10, 0.12, 0.11, 0.13], [0.15, 0.16, 0.12, 0.18]
    moved = {"auroc": [0.9] * 4, "recall": [0.5] * 4, "n_flagged": [3] * 4, "n_poison_flagged": [2] * 4,
             "roc_fpr": [[0.0, 1.0]] * 4, "roc_tpr": [[0.0, 1.0]] * 4,
             "error_defended": [0.11, 0.13, 0.12, 0.12], "error_clean_defended": [0.10, 0.125, 0.11, 0.14]}
    still = {**moved, "n_flagged": [0] * 4, "error_defended": pois, "error_clean_defended": clean}
    m = {"n_poisons": 10, "error_clean": clean, "error_poisoned": pois, "detectors": {"a": moved, "b": still}}
    rows = section._realworld_rows({"preset": "cell", "kind": "realworld", "seeds": [0, 1, 2, 3]}, m)
    section.apply_holm(rows)
    a, b = rows
    d = lambda x, y: np.asarray(x) - np.asarray(y)  # noqa: E731
    ps = [t_test_pvalue(d(moved["error_defended"], pois)), t_test_pvalue(d(moved["error_defended"], clean)),
          t_test_pvalue(d(moved["error_clean_defended"], clean)), t_test_pvalue(d(pois, clean))]
    want = holm(ps)
    assert a["holm_family"] == b["holm_family"] == 4
    got = [a["defended_minus_poisoned_p_holm"], a["defended_minus_clean_p_holm"], a["clean_cost_p_holm"],
           a["poisoned_minus_clean_p_holm"]]
    assert got == pytest.approx(want)  # the same float64 t-tests and Holm steps: approx's rel 1e-6 >> eps64
    assert b["defended_minus_poisoned_p"] is None and b["defended_minus_clean_p"] is None
    assert b["poisoned_minus_clean_p_holm"] == pytest.approx(want[3])
    assert a["defended_minus_poisoned_mean"] == pytest.approx(np.mean(d(moved["error_defended"], pois)))
