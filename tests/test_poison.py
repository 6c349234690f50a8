"""Gradient-matching poisoning (docs/science.md §4): objective vs finite differences, projection, assembly,
same-initialisation retraining, end-of-sequence penalty, group allocation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from implicitbias.poison import (
    BrewConfig,
    allocate_groups,
    assemble,
    box_bounds,
    craft_poisons,
    end_penalty,
    end_penalty_weights,
    energy_share,
    matching_loss,
    param_grad,
    project,
    retrain,
    target_direction,
)
from implicitbias.poison.matching import brew_objective
from implicitbias.core.ssm import DiagonalSSM, unit_teacher

L = 6


class SeqMLP(eqx.Module):
    """Tiny sequence classifier: flatten (L, C) -> tanh MLP -> logits; batched over axis 0."""

    mlp: eqx.nn.MLP

    def __call__(self, x):
        return jax.vmap(lambda s: self.mlp(s.reshape(-1)))(x)


def ce(model, x, y):
    logp = jax.nn.log_softmax(model(x), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def mse(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


@pytest.fixture(scope="module")
def mlp_problem():
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    model = SeqMLP(eqx.nn.MLP(L * 2, 3, 5, 2, activation=jnp.tanh, key=k[0]))
    x_p = jax.random.normal(k[1], (4, L, 2))
    y_p = jnp.array([0, 1, 2, 1])
    x_target = jax.random.normal(k[2], (3, L, 2))
    y_target = jnp.array([2, 0, 1])
    return model, x_p, y_p, x_target, y_target


def ssm_model():
    return DiagonalSSM(jnp.linspace(0.2, 0.9, 5), jnp.linspace(0.1, 0.5, 5), jnp.linspace(0.3, 0.7, 5))


def test_matching_loss_is_one_cosine_over_all_parameters_flattened(mlp_problem):
    model, x_p, y_p, x_target, y_target = mlp_problem
    delta = 0.1 * jax.random.normal(jax.random.PRNGKey(3), x_p.shape)
    D = target_direction(ce, model, x_target, y_target, "untargeted")
    gp, _ = ravel_pytree(param_grad(ce, model, x_p + delta, y_p))
    gt, _ = ravel_pytree(param_grad(ce, model, x_target, y_target))
    expected = 1.0 - np.dot(gp, -gt) / (np.linalg.norm(gp) * np.linalg.norm(gt))
    # float64 rounding bound: one cosine over ~50 parameters evaluated twice: ~50 eps64 / |1 - cos|
    # relative (the objective is O(1) here); rtol 1e-10. A per-leaf (not flattened) cosine differs by O(0.1).
    np.testing.assert_allclose(matching_loss(delta, model, ce, x_p, y_p, D), expected, rtol=1e-10)
    # targeted flips the sign of the direction
    Dt = target_direction(ce, model, x_target, y_target, "targeted")
    np.testing.assert_allclose(matching_loss(delta, model, ce, x_p, y_p, Dt), 2.0 - expected, rtol=1e-10)


def _fd_check(f, delta, key, n_dirs=4, h=1e-5):
    """Central differences (float64): truncation ~h^2 |f^(3)| ~ 1e-10 plus rounding ~eps64 |f| / h
    ~ 2e-11 (|f| = O(1)): both under atol 1e-9 + rtol 1e-6 |g|; a wrong gradient is off by O(|g|)."""
    g = jax.jit(jax.grad(f))(delta)
    f = jax.jit(f)
    for v in jax.random.normal(key, (n_dirs,) + delta.shape):
        fd = (f(delta + h * v) - f(delta - h * v)) / (2 * h)
        np.testing.assert_allclose(jnp.vdot(g, v), fd, rtol=1e-6, atol=1e-9)
    # and single coordinates
    flat = delta.reshape(-1)
    for i in (0, flat.size // 2, flat.size - 1):
        e = jnp.zeros_like(flat).at[i].set(1.0).reshape(delta.shape)
        fd = (f(delta + h * e) - f(delta - h * e)) / (2 * h)
        np.testing.assert_allclose(g.reshape(-1)[i], fd, rtol=1e-6, atol=1e-9)


def test_matching_gradient_wrt_delta_matches_finite_differences_mlp(mlp_problem):
    model, x_p, y_p, x_target, y_target = mlp_problem
    D = target_direction(ce, model, x_target, y_target)
    cfg = BrewConfig(eps=0.5, penalty=0.7, penalty_power=2.0)
    f = lambda d: brew_objective(d, model, ce, x_p, y_p, D, cfg)[0]
    delta = 0.2 * jax.random.normal(jax.random.PRNGKey(4), x_p.shape)
    _fd_check(f, delta, jax.random.PRNGKey(5))


def test_matching_gradient_with_relabelling_matches_finite_differences_ssm():
    """Clean-label regression: the labels teacher(x + delta) move with delta (second order through both)."""
    model, tch = ssm_model(), unit_teacher()
    x_p = jax.random.normal(jax.random.PRNGKey(6), (3, L))
    x_target = jnp.eye(20)[:10]
    D = target_direction(mse, model, x_target, tch(x_target))
    f = lambda d: matching_loss(d, model, mse, x_p, tch(x_p), D, label_fn=tch)
    delta = 0.3 * jax.random.normal(jax.random.PRNGKey(7), x_p.shape)
    _fd_check(f, delta, jax.random.PRNGKey(8))
    # relabelling matters: with frozen labels the objective differs (an effect, 1e-3 >> eps64)
    assert abs(float(f(delta)) - float(matching_loss(delta, model, mse, x_p, tch(x_p), D))) > 1e-3


def test_projection_nearest_point_and_budget():
    x = jnp.array([[0.0, 0.9, -0.5]])
    lo, hi = box_bounds(x, 0.3)
    p = project(jnp.array([[0.7, -2.0, 0.1]]), lo, hi)
    np.testing.assert_array_equal(p, [[0.3, -0.3, 0.1]])
    # nearest: no random point of the box is closer
    q = jnp.array([[0.7, -2.0, 0.1]])
    samples = jax.random.uniform(jax.random.PRNGKey(0), (2000, 1, 3), minval=-0.3, maxval=0.3)
    # exact: the projection is a clip, and no sample reaches a box corner's distance (margin >> eps64)
    assert float(jnp.min(jnp.sum((samples - q) ** 2, axis=(1, 2)))) >= float(jnp.sum((p - q) ** 2))
    # data range: x + delta must stay in [-1, 1]
    lo, hi = box_bounds(x, 0.3, clip_min=-1.0, clip_max=1.0)
    p = project(jnp.array([[0.0, 0.3, -0.3]]), lo, hi)
    np.testing.assert_allclose(p, [[0.0, 0.1, -0.3]])  # 1 - 0.9 in float64: an ulp off 0.1, rtol 1e-7


def test_crafted_poisons_respect_budget_and_align(mlp_problem):
    model, x_p, y_p, x_target, y_target = mlp_problem
    D = target_direction(ce, model, x_target, y_target)
    cfg = BrewConfig(eps=0.2, iterations=60, restarts=3, clip_min=-1.5, clip_max=1.5)
    res = craft_poisons(model, ce, x_p, y_p, D, jax.random.PRNGKey(1), cfg)
    # Budget: a float64 clip, exact up to eps64 (1e-12 absorbs the rounding of x + delta). The rest are
    # effects whose sensitivity was measured: 5 copies with x_p perturbed by a relative 1e-7 all end at
    # max |delta| = 0.2 exactly, lower the objective 1.064 -> 0.842 (spread 3e-8) and raise the targets'
    # loss by 3.2227e-5 (spread 1e-12); 0.19, history[0] and 0 are far outside those spreads.
    assert float(jnp.max(jnp.abs(res.delta))) <= 0.2 + 1e-12
    assert float(jnp.max(jnp.abs(res.delta))) > 0.19  # the budget is used, not trivially zero
    xp = x_p + res.delta
    assert bool(jnp.all((xp >= -1.5 - 1e-12) | (xp >= x_p - 1e-12)))  # only pushed into range, never out
    assert bool(jnp.all(xp <= jnp.maximum(1.5, x_p) + 1e-12))
    # best restart kept; the brew lowers the objective from its start
    assert int(res.best_restart) == int(jnp.argmin(res.restart_objectives))
    assert float(res.objective) < float(res.history[0])
    # sign convention (untargeted): a small training step on the poisons raises the targets' true-label loss
    params, static = eqx.partition(model, eqx.is_inexact_array)
    gp = param_grad(ce, model, xp, y_p)
    stepped = eqx.combine(jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, params, gp), static)
    assert float(ce(stepped, x_target, y_target)) > float(ce(model, x_target, y_target))


def test_assembly_keeps_labels_and_clean_copies():
    x = jnp.arange(5 * L, dtype=jnp.float64).reshape(5, L)
    y = jnp.array([3, 1, 4, 1, 5])
    idx = np.array([1, 3])
    delta = jnp.full((2, L), 0.25)
    dup = assemble(x, y, idx, delta, "duplicate")
    assert dup.x.shape == (7, L)
    np.testing.assert_array_equal(dup.x[:5], x)  # clean copies unchanged
    np.testing.assert_array_equal(dup.y[:5], y)
    np.testing.assert_array_equal(dup.x[5:], x[idx] + delta)
    np.testing.assert_array_equal(dup.y[5:], y[idx])  # poisons keep their labels
    np.testing.assert_array_equal(dup.is_poison, [0, 0, 0, 0, 0, 1, 1])
    rep = assemble(x, y, idx, delta, "replace")
    assert rep.x.shape == (5, L)
    np.testing.assert_array_equal(rep.y, y)
    np.testing.assert_array_equal(rep.x[idx], x[idx] + delta)
    keep = np.array([0, 2, 4])
    np.testing.assert_array_equal(rep.x[keep], x[keep])
    # regression: clean labels of the perturbed input
    tch = unit_teacher()
    xr = jax.random.normal(jax.random.PRNGKey(0), (4, L))
    reg = assemble(xr, tch(xr), np.array([0, 2]), jnp.ones((2, L)), "duplicate", label_fn=tch)
    np.testing.assert_allclose(reg.y[4:], tch(xr[jnp.array([0, 2])] + 1.0))  # the same float64 sum: rtol 1e-7
    with pytest.raises(ValueError, match="mode"):
        assemble(x, y, idx, delta, "add")


def test_retraining_starts_from_the_same_initialisation():
    init = ssm_model()
    seen = []

    def train_fn(model, x, y, key):
        seen.append((jax.tree_util.tree_map(np.array, model), np.array(key)))
        # "training" shrinks the parameters towards a fit; the poisoned set fits worse per call
        return jax.tree_util.tree_map(lambda p: 0.5 * p, model), {"n": x.shape[0]}

    x = jax.random.normal(jax.random.PRNGKey(0), (4, L))
    xp = jnp.concatenate([x, x + 1.0])
    loss = lambda m, a, b: jnp.sum(m.a ** 2) * a.shape[0]  # bigger set -> bigger loss at equal params
    # the clean run, then the poisoned one from the same init and key, until it fits as well (as realworld does)
    clean = retrain(init, x, jnp.zeros(4), train_fn, jax.random.PRNGKey(9), loss)
    poisoned = retrain(init, xp, jnp.zeros(8), train_fn, jax.random.PRNGKey(9), loss, target_loss=clean.train_loss,
                       max_rounds=5)
    first_clean, first_poison = seen[0], seen[1]
    for a, b in zip(jax.tree_util.tree_leaves(first_clean[0]), jax.tree_util.tree_leaves(first_poison[0])):
        assert a.tobytes() == b.tobytes()  # bit-identical initial parameters
    assert first_clean[1].tobytes() == first_poison[1].tobytes()
    # the poisoned run went on (continuing from its own model) until it fit at least as well
    assert poisoned.fits and poisoned.train_loss <= clean.train_loss
    assert poisoned.rounds == 1
    assert not np.array_equal(seen[2][0].a, first_poison[0].a)
    # the cap on extra rounds
    capped = retrain(init, xp, None, train_fn, jax.random.PRNGKey(0), loss, target_loss=0.0, max_rounds=2)
    assert capped.rounds == 2 and not capped.fits


def test_end_penalty_moves_energy_to_the_end():
    w = end_penalty_weights(L, 1.0)
    # closed forms (1 - t / (L - 1), a square): a few eps64 off, assert_allclose's rtol 1e-7
    np.testing.assert_allclose(w, [1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    d = jnp.zeros((2, L)).at[0, 0].set(0.5).at[1, L - 1].set(3.0)
    np.testing.assert_allclose(end_penalty(d, 0.5, 2.0), 2.0 * (1.0 * 1.0) / 2)  # last position is free
    model, tch = ssm_model(), unit_teacher()
    x_p = jax.random.normal(jax.random.PRNGKey(6), (4, L))
    x_target = jnp.eye(20)[:10]
    D = target_direction(mse, model, x_target, tch(x_target))
    shares = []
    for pen in (0.0, 0.03, 0.3, 3.0):
        cfg = BrewConfig(eps=0.5, iterations=80, restarts=1, penalty=pen)
        res = craft_poisons(model, mse, x_p, tch(x_p), D, jax.random.PRNGKey(2), cfg, label_fn=tch)
        shares.append(energy_share(res.delta, 1 / 3))
    # effects with measured sensitivity: 5 copies with x_p perturbed by a relative 1e-7 give the same
    # shares to 6 digits (0.5060, 0.5140, 0.5309, 0.9889; smallest step 8e-3), so sign-Adam's signs do
    # not flip on rounding here, and the order and the 0.9 hold with margins >= 1e5 times that spread
    assert all(b > a for a, b in zip(shares, shares[1:])), shares
    assert shares[-1] > 0.9


def test_energy_share():
    d = np.zeros((3, 8, 2))
    d[:, -2:, :] = 1.0
    # exact / closed forms: sums of ones (exact in binary), pytest.approx's rel 1e-6
    assert energy_share(d, 0.25) == 1.0
    assert energy_share(np.ones((3, 8)), 0.25) == pytest.approx(0.25)
    assert energy_share(np.ones((8, 3)), 0.25, time_axis=0) == pytest.approx(0.25)


def test_group_allocation_gives_half_to_correct_high_loss():
    losses = np.array([0.1, 2.0, 0.5, 3.0, 0.9, 1.5, 0.05, 0.7])
    correct = np.array([1, 1, 1, 0, 1, 0, 1, 1], bool)
    groups = allocate_groups(losses, correct, n_poisons=20, seed=0, n_groups=3)
    high = groups[0]
    assert high.name == "correct_high_loss"
    # correct targets' losses: 0.1 2.0 0.5 0.9 0.05 0.7 -> median 0.6 -> {1, 4, 7}
    assert sorted(high.targets.tolist()) == [1, 4, 7]
    assert high.poisons.size == 10
    assert [g.poisons.size for g in groups[1:]] == [5, 5]
    every_target = np.sort(np.concatenate([g.targets for g in groups]))
    np.testing.assert_array_equal(every_target, np.arange(8))
    every_poison = np.sort(np.concatenate([g.poisons for g in groups]))
    np.testing.assert_array_equal(every_poison, np.arange(20))  # disjoint, all used
    assert len(allocate_groups(losses, correct, 20, n_groups=1)) == 1


def test_same_norm_random_on_channels():
    """(P, L, C) perturbations: the control keeps each poison's l2 norm and is zero outside the support."""
    import jax
    import numpy as np

    from implicitbias.poison.controls import same_norm_random

    d = jax.random.normal(jax.random.PRNGKey(1), (5, 8, 3))
    r = np.asarray(same_norm_random(jax.random.PRNGKey(2), d, slice(6, None)))
    # float64 rescaling: norms of 24 entries each within ~24 eps64, far inside np.allclose's rtol 1e-5
    assert np.allclose(np.linalg.norm(r.reshape(5, -1), axis=1), np.linalg.norm(np.asarray(d).reshape(5, -1), axis=1))
    assert np.all(r[:, :6] == 0.0) and np.all(np.abs(r[:, 6:]) > 0)
