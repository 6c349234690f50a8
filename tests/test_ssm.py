import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicitbias.core.ssm import (
    DiagonalSSM,
    SSMNet,
    impulse_response,
    network_teacher,
    per_theorem_teacher,
    simulate,
    ssm_output,
    unit_teacher,
)


def _random_ssm(seed, d=5):
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    return [
        0.9 * jax.random.uniform(k[0], (d,), minval=-1, maxval=1),
        jax.random.normal(k[1], (d,)),
        jax.random.normal(k[2], (d,)),
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_impulse_response_matches_recurrence(seed):
    a, B, C = _random_ssm(seed)
    L = 8
    # float64 rounding bound: the recurrence and the power sum evaluate sum_i C_i a_i^k B_i (|a| < 0.9,
    # d = 5, k < 8) in another order: a few tens of eps64 times sum|C B| = O(1), i.e. ~1e-14; rtol 1e-12,
    # atol 1e-14. An off-by-one power (a factor a_i) is off by O(0.1).
    for j in range(L):  # a unit impulse at position j reads h_{L-j} at time L
        u = jnp.zeros(L).at[j].set(1.0)
        y_L = simulate(a, B, C, u)[-1]
        assert jnp.allclose(y_L, impulse_response(a, B, C, L)[L - j - 1], rtol=1e-12, atol=1e-14)


def test_output_matches_recurrence_on_random_inputs():
    a, B, C = _random_ssm(3)
    X = jax.random.normal(jax.random.PRNGKey(9), (6, 7))
    ref = jnp.stack([simulate(a, B, C, u)[-1] for u in X])
    # the same float64 bound, now summed over L = 7 normal inputs: rtol 1e-12, atol 1e-13
    assert jnp.allclose(ssm_output(a, B, C, X), ref, rtol=1e-12, atol=1e-13)


def test_impulse_response_closed_form_single_state():
    h = impulse_response(jnp.array([0.5]), jnp.array([2.0]), jnp.array([3.0]), 5)
    # exact in binary (powers of 1/2 times 6): the default tolerances only absorb the float64 pow
    assert jnp.allclose(h, 6.0 * 0.5 ** jnp.arange(5))


def test_impulse_response_gradient_finite_at_zero_entries():
    g = jax.grad(lambda a: impulse_response(a, jnp.ones(3), jnp.ones(3), 6).sum())(jnp.array([0.0, 0.5, -0.2]))
    assert jnp.all(jnp.isfinite(g))
    assert jnp.allclose(g[0], 1.0)  # closed form d/da (1 + a + a^2 + ...) at a = 0; float64, default rtol 1e-5


def test_teachers():
    d = 10
    h = per_theorem_teacher(d).impulse_response(20)
    # closed forms (integers, 7.5 relu(sum)) in float64, a few eps64 off: jnp.allclose's defaults
    assert jnp.allclose(h[0], d) and jnp.allclose(h[1:], 1.0)
    assert jnp.allclose(unit_teacher().impulse_response(40), 1.0)
    X = jax.random.normal(jax.random.PRNGKey(0), (50, 6))
    assert jnp.allclose(network_teacher(15, 2)(X), 7.5 * jax.nn.relu(X.sum(1)))


def test_ssmnet_forward_by_hand():
    ssm = DiagonalSSM(jnp.array([0.5, 0.1]), jnp.array([1.0, 2.0]), jnp.array([1.0, -1.0]))
    W1 = jnp.array([[1.0], [-2.0]])
    W2 = jnp.array([[1.0, 0.5], [0.0, 1.0]])
    head = jnp.array([2.0, -1.0])
    net = SSMNet(ssm, (W1, W2), head)
    X = jnp.array([[1.0, 2.0, -1.0]])
    z = float(ssm(X)[0])
    x1 = np.maximum(np.array([1.0, -2.0]) * z, 0)
    x2 = np.maximum(np.array([[1.0, 0.5], [0.0, 1.0]]) @ x1, 0)
    # the same float64 products by hand: a few eps64 apart, inside np.isclose's default rtol 1e-5
    assert np.isclose(float(net(X)[0]), np.array([2.0, -1.0]) @ x2)


def test_full_kernel_ssm_gradients():
    """FullKernelSSM is DiagonalSSM's function with a dense A: same outputs, same gradient on diag(A)
    as on a, and off-diagonal gradients dL/dA_ij = C_i B_j sum_k g_k sum_{p<k-1} a_i^p a_j^(k-2-p)
    (g_k = dL/dh_k), checked against that closed form and a finite difference."""
    from implicitbias.core.ssm import FullKernelSSM, output_at_L

    rng = np.random.default_rng(0)
    d, L = 5, 6
    a, B, C = (jnp.asarray(rng.uniform(0.1, 0.9, d)) for _ in range(3))
    X, y = jnp.asarray(rng.normal(size=(7, L))), jnp.asarray(rng.normal(size=7))
    diag, full = DiagonalSSM(a, B, C), FullKernelSSM.from_diagonal(DiagonalSSM(a, B, C))
    loss = lambda m: jnp.mean((m(X) - y) ** 2)
    # float64 rounding bounds: the dense A^(k-1) and the diagonal powers evaluate the same sums of
    # positive terms (a, B, C in (0.1, 0.9)) in other orders, ~L d eps64 = 7e-15 relative, times the
    # condition sum|h X| / |y| <= 5.4 of the outputs: rtol 1e-13 (measured 5e-16);
    # gradients add a backward pass over ~L d^2 terms (rtol 1e-11 / 1e-10 = 4.5e4 / 4.5e5 eps64).
    # A transposed A or a missing off-diagonal term is off by O(1).
    np.testing.assert_allclose(full(X), diag(X), rtol=1e-13)
    gd, gf = jax.grad(loss)(diag), jax.grad(loss)(full)
    np.testing.assert_allclose(jnp.diag(gf.A), gd.a, rtol=1e-11)
    np.testing.assert_allclose(gf.B, gd.B, rtol=1e-11)
    g = jax.grad(lambda h: jnp.mean((output_at_L(h, X) - y) ** 2))(diag.impulse_response(L))
    an, bn, cn = (np.asarray(v) for v in (a, B, C))
    expect = np.zeros((d, d))
    for k in range(2, L + 1):  # h_k = C A^(k-1) B
        S = sum(np.outer(an**p, an ** (k - 2 - p)) for p in range(k - 1))
        expect += float(g[k - 1]) * np.outer(cn, bn) * S
    np.testing.assert_allclose(gf.A, expect, rtol=1e-10)
    E = jnp.zeros((d, d)).at[1, 3].set(1e-6)
    fd = (loss(FullKernelSSM(full.A + E, B, C)) - loss(FullKernelSSM(full.A - E, B, C))) / 2e-6
    # central difference, h = 1e-6: truncation ~h^2 and rounding ~eps64 |loss| / h ~ 1e-10, far under rel 1e-6
    assert float(fd) == pytest.approx(float(gf.A[1, 3]), rel=1e-6)
    assert np.abs(np.asarray(gf.A) - np.diag(np.diag(np.asarray(gf.A)))).max() > 1e-3  # an effect, not rounding


def test_keep_diagonal_projects_full_kernel_updates_only():
    import optax

    from implicitbias.core.optim import adaptive_gd, keep_diagonal
    from implicitbias.core.ssm import FullKernelSSM

    full = FullKernelSSM(jnp.diag(jnp.array([0.5, 0.2])), jnp.ones(2), jnp.ones(2))
    net = SSMNet(full, (jnp.ones((3, 1)), jnp.ones((3, 3))), jnp.ones(3))
    upd = jax.tree_util.tree_map(jnp.ones_like, net)
    out, _ = keep_diagonal().update(upd, keep_diagonal().init(net))
    np.testing.assert_array_equal(out.ssm.A, jnp.eye(2))
    np.testing.assert_array_equal(out.ssm.B, jnp.ones(2))
    fixed = FullKernelSSM(full.A, full.B, full.C, train_BC=False)
    out_f, _ = keep_diagonal().update(jax.tree_util.tree_map(jnp.ones_like, fixed), None)
    assert np.all(np.asarray(out_f.B) == 0) and np.all(np.asarray(out_f.C) == 0) and np.asarray(out_f.A)[0, 0] == 1
    np.testing.assert_array_equal(out.layers[1], jnp.ones((3, 3)))  # a square MLP layer is left alone
    # the adaptive rate sees the norm of the whole (d, d) gradient: first step lr0/sqrt(||g_A|| + ||g_B|| + ||g_C||)
    grads = FullKernelSSM(jnp.array([[3.0, 4.0], [0.0, 0.0]]), jnp.array([1.0, 0.0]), jnp.zeros(2))
    opt = optax.chain(adaptive_gd(0.1), keep_diagonal())
    u, _ = opt.update(grads, opt.init(full))
    lr = 0.1 / (np.sqrt(5.0 + 1.0) + 1e-6)
    # one float64 closed form (norm, sqrt, division): a few eps64 apart, rtol 1e-12 = 4.5e3 eps64
    np.testing.assert_allclose(u.A, [[-3.0 * lr, 0.0], [0.0, 0.0]], rtol=1e-12)
