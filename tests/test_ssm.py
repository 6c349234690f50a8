import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicitbias.ssm import (DiagonalSSM, SSMNet, impulse_response, multi_teacher, network_teacher,
                              per_theorem_teacher, simulate, ssm_output, unit_teacher)


def _random_ssm(seed, d=5):
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    return [0.9 * jax.random.uniform(k[0], (d,), minval=-1, maxval=1), jax.random.normal(k[1], (d,)), jax.random.normal(k[2], (d,))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_impulse_response_matches_recurrence(seed):
    a, B, C = _random_ssm(seed)
    L = 8
    for j in range(L):  # a unit impulse at position j reads h_{L-j} at time L
        u = jnp.zeros(L).at[j].set(1.0)
        y_L = simulate(a, B, C, u)[-1]
        assert jnp.allclose(y_L, impulse_response(a, B, C, L)[L - j - 1], rtol=1e-12, atol=1e-14)


def test_output_matches_recurrence_on_random_inputs():
    a, B, C = _random_ssm(3)
    X = jax.random.normal(jax.random.PRNGKey(9), (6, 7))
    ref = jnp.stack([simulate(a, B, C, u)[-1] for u in X])
    assert jnp.allclose(ssm_output(a, B, C, X), ref, rtol=1e-12, atol=1e-13)


def test_impulse_response_closed_form_single_state():
    h = impulse_response(jnp.array([0.5]), jnp.array([2.0]), jnp.array([3.0]), 5)
    assert jnp.allclose(h, 6.0 * 0.5 ** jnp.arange(5))


def test_impulse_response_gradient_finite_at_zero_entries():
    g = jax.grad(lambda a: impulse_response(a, jnp.ones(3), jnp.ones(3), 6).sum())(jnp.array([0.0, 0.5, -0.2]))
    assert jnp.all(jnp.isfinite(g))
    assert jnp.allclose(g[0], 1.0)  # d/da (1 + a + a^2 + ...) at a = 0


def test_teachers():
    d = 10
    h = per_theorem_teacher(d).impulse_response(20)
    assert jnp.allclose(h[0], d) and jnp.allclose(h[1:], 1.0)
    assert jnp.allclose(unit_teacher().impulse_response(40), 1.0)
    h3 = multi_teacher(3).impulse_response(4)
    assert jnp.allclose(h3[2], 0.99**2 + 0.8**2 + 0.5**2)
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
    assert np.isclose(float(net(X)[0]), np.array([2.0, -1.0]) @ x2)
