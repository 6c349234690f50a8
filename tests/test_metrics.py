import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicitbias.core.metrics import effective_rank, extrapolation_error, gamma_coefficients, relative_l2_error
from implicitbias.core.ssm import DiagonalSSM, SSMNet, ssm_output


def test_effective_rank_one_hot_and_uniform():
    # closed forms (exp of the entropy of the normalised |a|) evaluated in float64: a few eps64 off,
    # far inside jnp.isclose's default rtol 1e-5; a wrong normalisation or log base is off by O(1)
    assert jnp.isclose(effective_rank(jnp.zeros(10).at[3].set(-0.7)), 1.0)
    assert jnp.isclose(effective_rank(jnp.full(10, 0.3)), 10.0)
    # two equal entries: exp(log 2) = 2, signs ignored
    assert jnp.isclose(effective_rank(jnp.array([0.5, -0.5, 0.0])), 2.0)


def test_extrapolation_and_l2_errors():
    # closed forms on short decimals (float64, a few eps64): isclose's default rtol 1e-5
    h_star = jnp.array([10.0, 1.0, 1.0])
    assert jnp.isclose(extrapolation_error(jnp.array([10.0, 1.5, 0.0]), h_star), 0.1)
    assert jnp.isclose(
        relative_l2_error(jnp.array([3.0, 4.0]), jnp.array([0.0, 0.0]) + jnp.array([3.0, 0.0])), 4.0 / 3.0
    )


def _mse(a, B, C, X, y):
    return jnp.mean((ssm_output(a, B, C, X) - y) ** 2)


def test_gamma_identity_standalone():
    """dL/da_i = -B_i C_i sum_l gamma^(l) a_i^l (docs/science.md §1) with xi = 1."""
    k = jax.random.split(jax.random.PRNGKey(1), 5)
    d, L, N = 6, 7, 9
    a, B, C = 0.8 * jax.random.uniform(k[0], (d,)), jax.random.normal(k[1], (d,)), jax.random.normal(k[2], (d,))
    X, y = jax.random.normal(k[3], (N, L)), jax.random.normal(k[4], (N,))
    grad = jax.grad(_mse)(a, B, C, X, y)
    gamma = gamma_coefficients(y - ssm_output(a, B, C, X), jnp.ones(N), X)
    pred = -B * C * (a[:, None] ** jnp.arange(L - 1)[None, :] @ gamma)
    # float64 rounding bound: autodiff and the closed form sum the same ~N L terms in another order,
    # error <= k eps64 sum|terms| with sum|terms| / |grad| <= 9 here (k ~ N L = 63): ~1e-13 relative;
    # rtol 1e-10 (4.5e5 eps64), atol 1e-12 for entries near 0 (|grad| >= 7e-4 here; measured <= 3e-16).
    # A wrong power of a, a missing factor 2 or a sign is off by O(1).
    assert jnp.allclose(grad, pred, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # 5 s; moved to make test-all to keep the fast suite under 180 s
def test_gamma_identity_in_network():
    k = jax.random.split(jax.random.PRNGKey(2), 8)
    d, L, N, m = 4, 6, 12, 5
    ssm = DiagonalSSM(
        0.8 * jax.random.uniform(k[0], (d,)), jax.random.normal(k[1], (d,)), jax.random.normal(k[2], (d,))
    )
    net = SSMNet(ssm, (jax.random.normal(k[3], (m, 1)), jax.random.normal(k[4], (m, m))), jax.random.normal(k[5], (m,)))
    X, y = jax.random.normal(k[6], (N, L)), jax.random.normal(k[7], (N,))
    loss = lambda a: jnp.mean((SSMNet(DiagonalSSM(a, ssm.B, ssm.C), net.layers, net.head)(X) - y) ** 2)
    z = ssm(X)
    f, xi = jax.jvp(net.features, (z,), (jnp.ones_like(z),))
    gamma = gamma_coefficients(y - f, xi, X)
    pred = -ssm.B * ssm.C * (ssm.a[:, None] ** jnp.arange(L - 1)[None, :] @ gamma)
    # the same float64 rounding bound as above (plus the network's two small layers): rtol 1e-10
    assert jnp.allclose(jax.grad(loss)(ssm.a), pred, rtol=1e-10, atol=1e-12)


def test_gamma0_zero_without_mass_at_second_to_last_position():
    X = jax.random.normal(jax.random.PRNGKey(0), (5, 6)).at[:, 4].set(0.0)
    g = gamma_coefficients(jnp.ones(5), jnp.ones(5), X)
    # exact: gamma^(0) sums only entries that are exactly 0; the others are sums of normal draws
    assert g[0] == 0.0 and jnp.all(g[1:] != 0.0)


def test_loss_gradient_matches_finite_differences():
    k = jax.random.split(jax.random.PRNGKey(3), 5)
    d, L, N = 4, 5, 7
    params = [0.7 * jax.random.uniform(k[0], (d,)), jax.random.normal(k[1], (d,)), jax.random.normal(k[2], (d,))]
    X, y = jax.random.normal(k[3], (N, L)), jax.random.normal(k[4], (N,))
    grads = jax.grad(lambda p: _mse(*p, X, y))(params)
    eps = 1e-6
    for which in range(3):
        for i in range(d):
            plus = [p.at[i].add(eps) if j == which else p for j, p in enumerate(params)]
            minus = [p.at[i].add(-eps) if j == which else p for j, p in enumerate(params)]
            fd = (_mse(*plus, X, y) - _mse(*minus, X, y)) / (2 * eps)
            # central-difference error bound: truncation h^2 |f^(3)|/6 ~ 1e-12 plus rounding
            # ~eps64 |f| / h = 2.2e-16 * 4.3 / 1e-6 ~ 1e-9 (f = 4.3 here): atol 1e-9 + rtol 1e-6 |g|
            # (|g| >= 0.37) sits above both; measured <= 6e-4 of it. A wrong gradient is off by O(|g|).
            assert np.isclose(float(grads[which][i]), float(fd), rtol=1e-6, atol=1e-9)
