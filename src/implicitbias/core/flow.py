"""Gradient flow ``da/dt = -grad L(a)`` for the per-Theorem setting (docs/science.md §2a), via Diffrax.

Only ``a`` moves; ``w = B * C`` is fixed. The loss is the mean squared error at time ``L`` on
inputs ``X`` (rows weighted by ``row_weight`` so runs of different sizes can be padded and solved
in one batch: padded state entries have ``w_i = 0`` and padded rows weight 0).

Why a change of clock. From a near-zero start the loss plateaus for ``t ~ 1e11-1e13`` and then an
entry of ``a`` blows up to its final value within a few time units. Integrated in ``t`` directly,
the step a stiff solver needs during that jump (~1e-4) is below float64's resolution of ``t`` at
1e12, so the solver stalls (seen with Kvaerno5 at L=9). We integrate instead in a clock ``s`` with
``dt/ds = 1 / r(a)``, where ``r(a) = sum_k (k-1) ||a||^(k-3)`` over the impulse-response indices
``k >= 2`` the data constrain: an upper scale for how fast ``a`` can change relative to its size.
The plateau then takes ``O(1)`` in ``s``, the jump is resolved finely, and ``t`` is carried as an
extra state component. An event stops the solve exactly when ``t`` reaches ``t_final``. The clock
is purely numerical: the state at time ``t`` is the same whatever ``r`` is.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import diffrax as dfx
import jax
import jax.numpy as jnp
import optimistix as optx

from .ssm import impulse_response, output_at_L


class FlowProblem(NamedTuple):
    """One gradient-flow run (add a leading axis to batch several with ``solve_flow``)."""

    a0: jax.Array  # (d,) initial state diagonal
    w: jax.Array  # (d,) fixed B * C (0 for padded entries)
    X: jax.Array  # (N, L) inputs
    y: jax.Array  # (N,) labels
    row_weight: jax.Array  # (N,) 1 for real rows, 0 for padding
    t_final: jax.Array  # () time to integrate to


class FlowResult(NamedTuple):
    a: jax.Array  # (d,) state at t_final
    t: jax.Array  # () time reached (== t_final on success)
    num_steps: jax.Array  # () solver steps taken
    success: jax.Array  # () bool: reached t_final


def flow_loss(a: jax.Array, p: FlowProblem) -> jax.Array:
    """Mean squared error at time ``L`` over the real rows of ``p.X``."""
    h = impulse_response(a, jnp.ones_like(a), p.w, p.X.shape[-1])
    resid = output_at_L(h, p.X) - p.y
    return jnp.sum(p.row_weight * resid**2) / jnp.sum(p.row_weight)


def _clock_rate(a: jax.Array, p: FlowProblem) -> jax.Array:
    """``r(a) = sum_k (k-1) ||a||^(k-3)`` over the constrained indices ``k >= 2`` (see module doc)."""
    L = p.X.shape[-1]
    k = L - jnp.arange(L)  # position j reads h_{L-j}
    used = jnp.any((p.X != 0) & (p.row_weight[:, None] > 0), axis=0) & (k >= 2)
    norm = jnp.linalg.norm(a) + 1e-30
    return jnp.sum(jnp.where(used, (k - 1) * norm ** (k - 3.0), 0.0)) + 1e-30


def _vector_field(s, state, p: FlowProblem):
    a, _ = state
    rate = -jax.grad(flow_loss)(a, p)
    dt_ds = 1.0 / _clock_rate(a, p)
    return dt_ds * rate, dt_ds


def _reached_t_final(t, y, args: FlowProblem, **kwargs):
    # Diffrax passes these by keyword; ``t`` is the clock s, ``y = (a, t)``.
    return y[1] - args.t_final


def solve_one(p: FlowProblem, rtol: float = 1e-8, atol: float = 1e-12, max_steps: int = 100_000) -> FlowResult:
    """Integrate the gradient flow of one problem from ``t = 0`` to ``p.t_final`` (Kvaerno5, stiff)."""
    controller = dfx.PIDController(rtol=rtol, atol=atol, norm=lambda state: optx.rms_norm(state[0]))
    event = dfx.Event(_reached_t_final, root_finder=optx.Newton(rtol=1e-12, atol=1e-12))
    sol = dfx.diffeqsolve(
        dfx.ODETerm(_vector_field),
        dfx.Kvaerno5(),
        t0=0.0,
        t1=1e300,
        dt0=1e-6,
        y0=(p.a0, jnp.zeros((), p.a0.dtype)),
        args=p,
        stepsize_controller=controller,
        event=event,
        max_steps=max_steps,
        throw=False,
    )
    a, t = sol.ys[0][-1], sol.ys[1][-1]
    # The event's root find can land a hair past t_final and report that as a plain finish;
    # success is judged on the state itself.
    success = jnp.all(jnp.isfinite(a)) & (jnp.abs(t - p.t_final) <= 1e-9 * p.t_final)
    return FlowResult(a, t, sol.stats["num_steps"], success)


def solve_flow(p: FlowProblem, rtol: float = 1e-8, atol: float = 1e-12, max_steps: int = 100_000) -> FlowResult:
    """``solve_one`` vmapped over the leading axis of every field of ``p`` (compiled)."""
    # one cache entry per (shapes, rtol, atol, max_steps) however the caller spells them: jit keys a
    # defaulted argument apart from a passed one, and tracing this solver takes seconds
    return _solve_flow(p, float(rtol), float(atol), int(max_steps))


@partial(jax.jit, static_argnums=(1, 2, 3))
def _solve_flow(p: FlowProblem, rtol: float, atol: float, max_steps: int) -> FlowResult:
    return jax.vmap(lambda q: solve_one(q, rtol, atol, max_steps))(p)


def pad_problems(problems: list[FlowProblem], d: int = 0, L: int = 0, N: int = 0) -> FlowProblem:
    """Stack problems of different ``d``, ``L``, ``N`` into one batch, padded to at least ``d, L, N``.

    Inputs are left-padded with zeros (earlier positions meet higher ``h_k`` that are then
    multiplied by 0), states right-padded with ``a = w = 0``, rows padded with weight 0: none of it
    changes the flow of the real entries. Padding to fixed bucket sizes lets runs of different
    sizes share one compiled solver.
    """
    d = max([d] + [p.a0.shape[0] for p in problems])
    L = max([L] + [p.X.shape[1] for p in problems])
    N = max([N] + [p.X.shape[0] for p in problems])

    def pad(p: FlowProblem) -> FlowProblem:
        n, l = p.X.shape
        X = jnp.zeros((N, L), p.X.dtype).at[:n, L - l :].set(p.X)
        vec = lambda v, size: jnp.zeros((size,), v.dtype).at[: v.shape[0]].set(v)
        return FlowProblem(vec(p.a0, d), vec(p.w, d), X, vec(p.y, N), vec(p.row_weight, N), jnp.asarray(p.t_final))

    padded = [pad(p) for p in problems]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *padded)
