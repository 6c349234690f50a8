"""S4D: the diagonal complex structured state space layer (docs/science.md §4), in Equinox.

Each of the ``H = d_model`` channels runs its own diagonal SSM with ``N = d_state`` complex modes
(their complex conjugates are implicit, so the real state size is ``2N``)::

    x'(t) = A x(t) + B u(t),   y(t) = 2 Re(C x(t)) + D u(t),   A = -exp(log_A_real) + i A_imag

with ``B = 1`` (its role is absorbed into ``C``) and the S4D-Lin initialisation
``A_n = -1/2 + i pi n``. Zero-order hold with step ``dt = exp(log_dt)`` gives
``Abar = exp(dt A)`` and ``Bbar = (Abar - 1) / A``, so the discrete recurrence

    x_k = Abar x_{k-1} + Bbar u_k,   y_k = 2 Re(C x_k) + D u_k

has the convolution kernel ``K_l = 2 Re(sum_n C_n Bbar_n Abar_n^l)``, ``l = 0..L-1`` (a
Vandermonde product), and ``y = K * u + D u`` is computed as a causal FFT convolution of length
``2L`` (no wrap-around). The block then applies GELU and a position-wise ``H -> 2H`` linear map
followed by a GLU, as in the reference S4D code.

Parameters are created float32 (complex64 inside; the package runs with x64 enabled, so every
array gets an explicit dtype); the computation follows the parameters' dtype, so a copy cast to
float64 computes in float64 (the tests use this for tight comparisons). Shapes are for a single sequence;
batch with ``jax.vmap``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

F32 = jnp.float32


def causal_fft_conv(u: jax.Array, k: jax.Array) -> jax.Array:
    """Causal convolution ``y_t = sum_{s<=t} k_{t-s} u_s`` along the last axis, via FFT.

    ``u`` and ``k`` have shape ``(..., L)``; the FFT length ``2L`` rules out circular wrap-around.
    """
    L = u.shape[-1]
    n = 2 * L
    y = jnp.fft.irfft(jnp.fft.rfft(u, n=n) * jnp.fft.rfft(k, n=n), n=n)
    return y[..., :L].astype(u.dtype)


class S4DBlock(eqx.Module):
    """One S4D layer: SSM convolution + D skip, GELU, position-wise linear ``H -> 2H`` and GLU.

    ``__call__``: ``(L, d_model) -> (L, d_model)``. Causal: output ``t`` depends on inputs ``<= t``.
    """

    log_dt: jax.Array  # (H,)
    log_A_real: jax.Array  # (H, N)
    A_imag: jax.Array  # (H, N)
    C: jax.Array  # (H, N, 2): real and imaginary parts
    D: jax.Array  # (H,)
    out: eqx.nn.Linear  # H -> 2H, then GLU
    # the optimiser group the authors train at their own rate without weight decay (their `_optim`
    # attribute, S4D's kernel); read by models/training.py, so the loop names no model's fields
    ssm_parameters: ClassVar[tuple[str, ...]] = ("log_dt", "log_A_real", "A_imag")

    def __init__(self, d_model: int, d_state: int, *, dt_min: float = 1e-3, dt_max: float = 1e-1, key: jax.Array):
        k_dt, k_c, k_d, k_out = jax.random.split(key, 4)
        H, N = d_model, d_state
        self.log_dt = jax.random.uniform(k_dt, (H,), F32, math.log(dt_min), math.log(dt_max))
        self.log_A_real = jnp.full((H, N), math.log(0.5), F32)
        self.A_imag = jnp.broadcast_to(math.pi * jnp.arange(N, dtype=F32), (H, N))
        self.C = jax.random.normal(k_c, (H, N, 2), F32) * math.sqrt(0.5)  # complex normal, E|C|^2 = 1
        self.D = jax.random.normal(k_d, (H,), F32)
        self.out = eqx.nn.Linear(H, 2 * H, key=k_out, dtype=F32)

    def discretize(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """ZOH-discretised ``(Abar, Bbar, C)``, each complex of shape ``(H, N)``."""
        dt = jnp.exp(self.log_dt)[:, None]
        A = -jnp.exp(self.log_A_real) + 1j * self.A_imag
        Abar = jnp.exp(dt * A)
        Bbar = (Abar - 1.0) / A
        C = self.C[..., 0] + 1j * self.C[..., 1]
        return Abar, Bbar, C

    def kernel(self, L: int) -> jax.Array:
        """Convolution kernel ``K`` of shape ``(H, L)``: ``K[h, l] = 2 Re(sum_n C Bbar Abar^l)``."""
        dt = jnp.exp(self.log_dt)[:, None]
        A = -jnp.exp(self.log_A_real) + 1j * self.A_imag
        _, Bbar, C = self.discretize()
        vandermonde = jnp.exp((dt * A)[..., None] * jnp.arange(L, dtype=self.log_dt.dtype))  # (H, N, L)
        return 2.0 * jnp.einsum("hn,hnl->hl", C * Bbar, vandermonde).real

    def ssm(self, u: jax.Array) -> jax.Array:
        """The linear SSM with D skip alone: ``(L, H) -> (L, H)``, ``y = K * u + D u``."""
        L = u.shape[0]
        u = u.astype(self.log_dt.dtype)
        y = causal_fft_conv(u.T, self.kernel(L)).T
        return y + self.D * u

    def __call__(self, u: jax.Array) -> jax.Array:
        y = jax.nn.gelu(self.ssm(u))
        return jax.nn.glu(jax.vmap(self.out)(y), axis=-1)
