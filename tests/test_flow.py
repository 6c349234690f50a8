import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from implicitbias.core.flow import FlowProblem, flow_loss, pad_problems, solve_flow
from implicitbias.core.sequences import impulses


def _problem(a0, L, positions, T):
    X = impulses(L, positions)
    return FlowProblem(
        jnp.asarray(a0), jnp.ones(len(a0)), X, jnp.ones(X.shape[0]), jnp.ones(X.shape[0]), jnp.asarray(T)
    )


def _scipy_reference(a0, L, positions, T):
    ks = [L - p for p in positions]

    def rhs(t, a):
        g = np.zeros_like(a)
        for k in ks:
            g += 2 * (np.sum(a ** (k - 1)) - 1) * (k - 1) * a ** (k - 2)
        return -g / len(ks)

    return solve_ivp(rhs, (0, T), a0, method="LSODA", rtol=1e-11, atol=1e-15).y[:, -1]


def test_flow_matches_independent_solver_and_padding_is_inert():
    """Diffrax with the change of clock vs SciPy's LSODA in plain time, on a blow-up problem that
    plateaus and then jumps, batched with a padded problem of another size."""
    rng = np.random.RandomState(0)
    a_small = np.sort(0.05 * rng.rand(4))[::-1].copy()
    a_big = np.sort(0.3 * rng.rand(6))[::-1].copy()
    p1 = _problem(a_small, 5, [0], 3e4)  # constrains h_5: plateau then jump
    p2 = _problem(a_big, 6, [0, 4], 50.0)  # constrains h_6 and h_2
    # padded to the per-Theorem cells' buckets (d 32, L 16, N 4, 4 seeds): a process that runs both this
    # and test_table1's L=7 cells traces and compiles the solver once; padding is inert whatever its size
    batch = pad_problems([p1, p2, p2, p1], d=32, L=16, N=4)
    res = solve_flow(batch)
    assert bool(res.success[0]) and bool(res.success[1])
    ref1 = _scipy_reference(a_small, 5, [0], 3e4)
    ref2 = _scipy_reference(a_big, 6, [0, 4], 50.0)
    assert ref1.max() > 0.9  # the jump did happen before t_final
    # Tolerances from the solvers' error control, not from rounding: Diffrax runs at rtol 1e-8 per step
    # (LSODA at 1e-11), and the global error through the plateau and the jump may grow that by up to
    # ~1e3, hence rtol 1e-5 (atol 1e-9 for entries near 0). Rounding is far below: a relative 1e-7
    # change of a0 (5 copies) moves the reference by at most 1.1e-7 relative (no amplification), so
    # float64 rounding (eps 2.2e-16) moves it by ~1e-15. Measured gap: 6e-10. A wrong clock change,
    # a wrong padding or a wrong gradient moves the state by O(1).
    np.testing.assert_allclose(np.asarray(res.a[0, :4]), ref1, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(res.a[1, :6]), ref2, rtol=1e-5, atol=1e-9)
    assert np.all(np.asarray(res.a[0, 4:]) == 0.0)  # padded entries never move
    first = FlowProblem(*(field[0] for field in batch))
    # converged: after the jump the loss decays exponentially to 0; 1e-10 = (1e-5)^2, the square of
    # the state tolerance above, as the loss is quadratic in the distance to the zero-loss set (1.8e-30 here)
    assert float(flow_loss(res.a[0], first)) < 1e-10
