import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from implicitbias.core.optim import StopRule, adaptive_gd, make_optimizer
from implicitbias.core.train import train, train_batched


def test_adaptive_lr_by_hand():
    """Two updates computed by hand from docs/science.md §1 (beta = 0.8, G_{-1} = 0)."""
    opt = adaptive_gd(0.1, beta=0.8, soft=1e-6)
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    g1 = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([-2.0])}  # norms 5 and 2 -> sum 7
    state = opt.init(params)
    up1, state = opt.update(g1, state)
    G0 = 0.2 * 7.0
    lr0 = 0.1 / (np.sqrt(G0 / (1 - 0.8)) + 1e-6)
    # float64 closed forms, a few eps64 apart: np.allclose's defaults (rtol 1e-5) catch a wrong
    # bias correction (a factor 1 - 0.8^t) or a missing square root by orders
    assert np.allclose(up1["a"], -lr0 * np.array([3.0, 4.0]))
    assert np.allclose(up1["b"], -lr0 * np.array([-2.0]))
    g2 = {"a": jnp.array([0.0, 1.0]), "b": jnp.array([0.0])}  # sum of norms 1
    up2, state = opt.update(g2, state)
    G1 = 0.8 * G0 + 0.2 * 1.0
    lr1 = 0.1 / (np.sqrt(G1 / (1 - 0.8**2)) + 1e-6)
    assert np.allclose(up2["a"], -lr1 * np.array([0.0, 1.0]))


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("sgdx", 0.1)


@pytest.mark.parametrize("kw", [dict(eps=0.0, extra_steps=1, max_steps=10), dict(eps=-1.0, extra_steps=1, max_steps=10),
                                dict(eps=0.1, extra_steps=-1, max_steps=10), dict(eps=0.1, extra_steps=1, max_steps=0)])
def test_stop_rule_validation(kw):
    with pytest.raises(ValueError):
        StopRule(**kw)


def _quadratic(x, data):
    return jnp.sum((x - data) ** 2)


def _log(x, data):
    return {"loss": _quadratic(x, data), "x": x}


def test_stopping_rule_exact():
    """GD on (x-1)^2 with lr 0.25 halves the error each step: L_t = 0.25^t, closed form."""
    x0, target = jnp.array([0.0]), jnp.array([1.0])
    rule = StopRule(eps=1e-3, extra_steps=7, max_steps=1000)
    res = jax.jit(lambda x: train(_quadratic, x, target, optax.sgd(0.25), rule, 4, _log))(x0)
    hit = int(np.ceil(np.log(1e-3) / np.log(0.25)))  # first t with 0.25^t <= 1e-3 -> 5
    # exact: x_t = 1 - 0.5^t and L_t = 0.25^t are exact in binary, and 0.25^5 is 2% below eps, 0.25^4 far above
    assert int(res.hit_step) == hit
    assert int(res.steps) == hit + 7
    assert np.isclose(float(res.params[0]), 1 - 0.5 ** (hit + 7))
    # logs every 4 updates, plus the final state
    steps = np.asarray(res.log_steps)[: int(res.n_logs)]
    assert steps.tolist() == [0, 4, 8, 12]
    assert np.allclose(np.asarray(res.logs["loss"])[: int(res.n_logs)], 0.25 ** steps)


def test_stopping_rule_max_steps_and_never_hit():
    rule = StopRule(eps=1e-30, extra_steps=5, max_steps=13)
    res = train(_quadratic, jnp.array([0.0]), jnp.array([1.0]), optax.sgd(0.01), rule, 5, _log)
    assert int(res.steps) == 13 and int(res.hit_step) == -1 and not bool(res.diverged)


def test_divergence_is_recorded():
    # lr 1.5 on (x-1)^2 multiplies the error by -2 each step; the loss overflows to inf
    rule = StopRule(eps=1e-8, extra_steps=0, max_steps=100_000)
    res = train(_quadratic, jnp.array([0.0]), jnp.array([1.0]), optax.sgd(1.5), rule, 100, _log)
    assert bool(res.diverged)
    t = int(res.diverged_step)
    # closed form: the loss is 4^t, which overflows float64 (1.8e308 = 4^512) at t = 512; the wide range
    # leaves room for where the chunked check sees it, and rounding cannot move an overflow by 10^2 steps
    assert int(res.steps) == t and 500 < t < 1100


def test_batched_equals_individual_runs():
    """vmap over runs with different stopping times gives the same result as each run alone."""
    x0 = jnp.array([[0.0], [0.9], [-3.0]])
    targets = jnp.ones((3, 1))
    rule = StopRule(eps=1e-4, extra_steps=3, max_steps=500)
    opt = adaptive_gd(0.05)
    batched = train_batched(_quadratic, x0, targets, opt, rule, 10, _log)
    # rounding bound: both compile the same float64 element-wise updates, which may differ only by
    # FMA contraction or fusion (<= 1 ulp per update); each GD step on this quadratic shrinks earlier
    # errors (factor |1 - 2 lr_t| < 1), so they stay at a few ulp of |x| <= 3 (~1e-15): atol 1e-14
    # (measured: 0, bit-identical). Equal steps: the loss is >= 10% away from eps at every update
    # (|log(L_t / eps)| >= 0.10 for these starts), so no rounding moves the stopping step.
    for i in range(3):
        single = train(_quadratic, x0[i], targets[i], opt, rule, 10, _log)
        assert int(single.steps) == int(batched.steps[i])
        assert np.allclose(single.params, batched.params[i], rtol=0, atol=1e-14)
        # the log rows too (the batched loop writes them itself): same rows, same NaN/-1 padding
        for field in ("hit_step", "n_logs", "diverged", "final_loss"):
            assert np.allclose(getattr(single, field), getattr(batched, field)[i], rtol=0, atol=1e-14), field
        np.testing.assert_array_equal(single.log_steps, batched.log_steps[i])
        for k in single.logs:
            np.testing.assert_allclose(single.logs[k], batched.logs[k][i], rtol=0, atol=1e-14)
    assert len(set(np.asarray(batched.steps).tolist())) == 3  # really different stopping times


def _dead_relu(x, data):
    """relu(x) - 1 squared: for x < 0 the gradient is exactly 0 and the loss is frozen at 1."""
    return (jax.nn.relu(x[0]) - data[0]) ** 2


def test_stall_rule_stops_frozen_runs_only():
    """A run stuck where the gradient is exactly 0 stops after one chunk when stall_tol > 0 and runs
    to max_steps without it; a run still moving (however slowly) is not stopped; batched runs
    stop independently."""
    target = jnp.array([1.0])
    frozen = StopRule(eps=1e-6, extra_steps=0, max_steps=5000, stall_tol=1e-12)
    res = train(_dead_relu, jnp.array([-0.5]), target, optax.sgd(0.1), frozen, 100, _log)
    assert bool(res.stalled) and int(res.steps) == 100 and int(res.hit_step) == -1
    res = train(_dead_relu, jnp.array([-0.5]), target, optax.sgd(0.1), StopRule(1e-6, 0, 5000), 100, _log)
    assert not bool(res.stalled) and int(res.steps) == 5000
    # slow but moving: lr 1e-9 changes the loss by ~4e-7 relative per 100 steps, far above 1e-12
    res = train(_quadratic, jnp.array([0.0]), target, optax.sgd(1e-9), frozen, 100, _log)
    assert not bool(res.stalled) and int(res.steps) == 5000
    res = train_batched(
        _dead_relu, jnp.array([[-0.5], [0.5]]), jnp.array([[1.0], [1.0]]), optax.sgd(0.1), frozen, 100, _log
    )
    assert np.asarray(res.stalled).tolist() == [True, False]
    assert np.asarray(res.steps)[0] == 100 and np.asarray(res.hit_step)[1] >= 0


@pytest.mark.parametrize("name", ["gd", "adaptive_gd", "adam", "keras_adam"])
def test_runtime_lr_equals_static_lr(name):
    """The learning rate as data gives the same trajectory as the learning rate baked in."""
    from implicitbias.core.optim import runtime_lr_optimizer

    rule = StopRule(eps=1e-30, extra_steps=0, max_steps=50)
    x0, target = jnp.array([0.3, -1.0]), jnp.array([1.0, 2.0])
    a = train(_quadratic, x0, target, make_optimizer(name, 0.05), rule, 10, _log)
    b = train(_quadratic, x0, target, runtime_lr_optimizer(name, 0.05), rule, 10, _log)
    # rounding bound: a constant lr may be folded (e.g. a division turned into a product), <= 1 ulp per
    # update over 50 updates of a contracting iteration: <= 50 eps64 ~ 1e-14 relative; rtol 1e-12. A
    # wrong schedule or bias correction changes the trajectory at the first update by >> 1e-12.
    assert np.allclose(a.params, b.params, rtol=1e-12, atol=0)
    assert np.allclose(a.logs["loss"], b.logs["loss"], rtol=1e-12, equal_nan=True)


def test_keras_adam_by_hand():
    """Keras's Adam: theta -= lr sqrt(1-b2^t)/(1-b1^t) m_t/(sqrt(v_t)+eps), eps = 1e-7 (two steps by
    hand); for gradients far above eps it agrees with Optax's Adam, far below it it does not."""
    from implicitbias.core.optim import keras_adam

    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-7
    g1, g2 = jnp.array([2.0, 1e-9]), jnp.array([-1.0, 3e-9])
    opt = keras_adam(lr)
    s = opt.init(jnp.zeros(2))
    u1, s = opt.update(g1, s)
    u2, s = opt.update(g2, s)
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1**2
    m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2**2
    # float64 closed forms, a few eps64 apart: rtol 1e-12 (4.5e3 eps64). Against Optax (eps added to
    # sqrt(v_hat) instead of sqrt(v)): closed-form gap eps / sqrt(v_1) = 1e-7 / 0.063 = 1.6e-6 relative
    # at g = 2, inside rtol 1e-5; at g = 1e-9 << eps the two differ by a factor > 10 (closed form).
    np.testing.assert_allclose(u1, -lr * np.sqrt(1 - b2) / (1 - b1) * m1 / (np.sqrt(v1) + eps), rtol=1e-12)
    np.testing.assert_allclose(u2, -lr * np.sqrt(1 - b2**2) / (1 - b1**2) * m2 / (np.sqrt(v2) + eps), rtol=1e-12)
    o = optax.adam(lr)
    uo, _ = o.update(g1, o.init(jnp.zeros(2)))
    assert np.isclose(u1[0], uo[0], rtol=1e-5) and abs(u1[1]) < 0.1 * abs(uo[1])


def test_progress_reports_leave_the_numbers_unchanged(monkeypatch):
    """While someone listens, train_batched runs its loop in segments and reports after each: the
    result is bit-identical to the one-piece run, the reports count updates up to the end, and the
    last says every run has stopped (remaining 0). A measurement point before the end is kept too."""
    from implicitbias.core import progress, train as train_mod

    monkeypatch.setattr(train_mod, "PROGRESS_SECONDS", 1e9)  # segments grow 4x each: 1, 4, 16, ... chunks
    x0 = jnp.array([[0.0], [0.9], [-3.0]])
    targets = jnp.ones((3, 1))
    rule = StopRule(eps=1e-4, extra_steps=30, max_steps=5000, measure_at=7)
    opt = adaptive_gd(0.05)
    plain = train_batched(_quadratic, x0, targets, opt, rule, 10, _log)
    reports = []
    with progress.listening(reports.append):
        segmented = train_batched(_quadratic, x0, targets, opt, rule, 10, _log)
    assert not progress.listened()
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(segmented)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(reports) >= 3  # really segmented
    updates = [r.updates for r in reports]
    assert updates == sorted(updates) and updates[-1] == int(np.max(plain.steps))
    assert updates[0] == 10  # the first segment is one chunk
    last = reports[-1]
    assert (last.running, last.runs, last.fitted, last.remaining) == (0, 3, 3, 0)
    assert all(r.remaining is None or r.remaining >= 0 for r in reports)
    np.testing.assert_array_equal(np.asarray(plain.measured_step) - np.asarray(plain.hit_step), [7, 7, 7])


def test_measured_parameters_are_those_of_a_run_ended_there():
    """``StopRule.measure_at``: the kept parameters are exactly the final ones of the same run ended
    ``measure_at`` updates after its hit; ``measure_at = extra_steps`` keeps the final ones."""
    x0 = jnp.array([[0.0], [0.9], [-3.0]])
    targets = jnp.ones((3, 1))
    opt = adaptive_gd(0.05)
    long = train_batched(_quadratic, x0, targets, opt, StopRule(1e-4, 30, 5000, measure_at=7), 10, _log)
    cut = train_batched(_quadratic, x0, targets, opt, StopRule(1e-4, 7, 5000), 10, _log)
    np.testing.assert_array_equal(np.asarray(long.measured), np.asarray(cut.params))
    np.testing.assert_array_equal(np.asarray(long.measured_step), np.asarray(cut.steps))
    assert np.all(np.asarray(long.steps) == np.asarray(long.hit_step) + 30)
    assert not np.array_equal(np.asarray(long.measured), np.asarray(long.params))  # still moving after 7
    end = train_batched(_quadratic, x0, targets, opt, StopRule(1e-4, 30, 5000, measure_at=30), 10, _log)
    np.testing.assert_array_equal(np.asarray(end.measured), np.asarray(end.params))
    single = train(_quadratic, x0[1], targets[1], opt, StopRule(1e-4, 30, 5000, measure_at=7), 10, _log)
    # single vs batched: the rounding bound of test_batched_equals_individual_runs (atol 1e-14)
    np.testing.assert_allclose(np.asarray(single.measured), np.asarray(cut.params)[1], rtol=0, atol=1e-14)
