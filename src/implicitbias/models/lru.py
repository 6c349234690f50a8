"""LRU: the Linear Recurrent Unit (Orvieto et al. 2023), in Equinox (docs/science.md §4).

A stable complex diagonal recurrence over ``N = d_state`` modes, driven by ``H = d_model`` inputs::

    x_k = lambda * x_{k-1} + gamma * (B u_k),   y_k = Re(C x_k) + D * u_k

with ``lambda = exp(-exp(nu_log) + i exp(theta_log))`` (so ``|lambda| < 1`` for any parameters),
and the normalisation ``gamma = exp(gamma_log)``, initialised to ``sqrt(1 - |lambda|^2)`` so that
the state keeps unit variance under white-noise input. Ring initialisation: ``|lambda|`` is drawn
uniformly on the ring ``r_min <= |lambda| <= r_max`` (uniform in area) and the phase uniformly in
``[0, max_phase)``. The recurrence is evaluated in parallel with ``jax.lax.associative_scan``.
The block then applies GELU and a position-wise ``H -> 2H`` linear map followed by a GLU.

Float32 parameters (complex64 inside). Shapes are for a single sequence; batch with ``jax.vmap``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

F32 = jnp.float32


def _combine(left, right):
    """Associative operator of ``x_k = a_k x_{k-1} + b_k``: compose two affine maps."""
    a_l, b_l = left
    a_r, b_r = right
    return a_r * a_l, a_r * b_l + b_r


def linear_recurrence(a: jax.Array, b: jax.Array) -> jax.Array:
    """All states of ``x_k = a_k * x_{k-1} + b_k`` with ``x_{-1} = 0`` (axis 0 is time), in parallel."""
    _, x = jax.lax.associative_scan(_combine, (a, b), axis=0)
    return x


class LRUBlock(eqx.Module):
    """One LRU layer: recurrence + D skip, GELU, position-wise linear ``H -> 2H`` and GLU.

    ``__call__``: ``(L, d_model) -> (L, d_model)``. Causal: output ``t`` depends on inputs ``<= t``.
    """

    nu_log: jax.Array  # (N,)
    theta_log: jax.Array  # (N,)
    gamma_log: jax.Array  # (N,)
    B: jax.Array  # (N, H, 2): real and imaginary parts
    C: jax.Array  # (H, N, 2)
    D: jax.Array  # (H,)
    out: eqx.nn.Linear  # H -> 2H, then GLU

    def __init__(self, d_model: int, d_state: int, *, r_min: float = 0.4, r_max: float = 0.99,
                 max_phase: float = 2 * math.pi, key: jax.Array):
        k_r, k_th, k_b, k_c, k_d, k_out = jax.random.split(key, 6)
        H, N = d_model, d_state
        u1 = jax.random.uniform(k_r, (N,), F32)
        r = jnp.sqrt(u1 * (r_max**2 - r_min**2) + r_min**2)
        self.nu_log = jnp.log(-jnp.log(r))
        theta = max_phase * jax.random.uniform(k_th, (N,), F32, minval=1e-4)
        self.theta_log = jnp.log(theta)
        self.gamma_log = 0.5 * jnp.log1p(-(r**2))  # log sqrt(1 - |lambda|^2)
        self.B = jax.random.normal(k_b, (N, H, 2), F32) / math.sqrt(2 * H)
        self.C = jax.random.normal(k_c, (H, N, 2), F32) / math.sqrt(N)
        self.D = jax.random.normal(k_d, (H,), F32)
        self.out = eqx.nn.Linear(H, 2 * H, key=k_out, dtype=F32)

    def lambdas(self) -> jax.Array:
        """Diagonal of the recurrence, complex ``(N,)`` with modulus ``exp(-exp(nu_log)) < 1``."""
        return jnp.exp(-jnp.exp(self.nu_log) + 1j * jnp.exp(self.theta_log))

    def input_matrix(self) -> jax.Array:
        """``gamma * B``, complex ``(N, H)``."""
        return (self.B[..., 0] + 1j * self.B[..., 1]) * jnp.exp(self.gamma_log)[:, None]

    def states(self, u: jax.Array) -> jax.Array:
        """Hidden states ``x_0..x_{L-1}``: ``(L, H) -> (L, N)`` complex."""
        bu = u.astype(self.B.dtype) @ self.input_matrix().T
        lam = jnp.broadcast_to(self.lambdas(), bu.shape)
        return linear_recurrence(lam, bu)

    def ssm(self, u: jax.Array) -> jax.Array:
        """The linear recurrence with D skip alone: ``(L, H) -> (L, H)``."""
        C = self.C[..., 0] + 1j * self.C[..., 1]
        return (self.states(u) @ C.T).real + self.D * u

    def __call__(self, u: jax.Array) -> jax.Array:
        y = jax.nn.gelu(self.ssm(u))
        return jax.nn.glu(jax.vmap(self.out)(y), axis=-1)
