"""Measurements of a trained student (docs/science.md §1, §2a-§2c).

All functions are pure and unbatched; batch with ``jax.vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def extrapolation_error(h: jax.Array, h_star: jax.Array) -> jax.Array:
    """``max_k |h_k - h*_k| / max_k |h*_k|`` over the given horizon (docs/science.md §2a, §2b).

    Shapes: ``h, h_star: (K,)`` -> scalar. With ``K = 20`` this is the per-Theorem error, with
    ``K = 40`` the beyond-Theorem error (unbounded: any ``|a_i| > 1`` explodes).
    """
    return jnp.max(jnp.abs(h - h_star)) / jnp.max(jnp.abs(h_star))


def relative_l2_error(f: jax.Array, f_star: jax.Array) -> jax.Array:
    """``||f - f*|| / ||f*||`` (docs/science.md §2c). Shapes ``(N,), (N,)`` -> scalar."""
    return jnp.linalg.norm(f - f_star) / jnp.linalg.norm(f_star)


def effective_rank(a: jax.Array) -> jax.Array:
    """``exp(entropy(p))`` with ``p_i = |a_i| / sum_j |a_j|`` over all ``d`` entries (docs/science.md §1).

    ``0 log 0`` counts as 0, so a one-hot vector has effective rank 1 and a constant one ``d``.
    Shape ``(d,)`` -> scalar.
    """
    mag = jnp.abs(a)
    p = mag / jnp.sum(mag)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    return jnp.exp(-jnp.sum(plogp))


def gamma_coefficients(delta: jax.Array, xi: jax.Array, X: jax.Array, n=None) -> jax.Array:
    """The paper's ``gamma^(l) = (2(l+1)/N) sum_n delta_n xi_n u_{n, L-l-2}`` for ``l = 0..L-2`` (docs/science.md §1).

    Shapes: ``delta: (N,)`` residuals ``y* - y``, ``xi: (N,)`` derivative of what follows the SSM
    (ones for a standalone SSM), ``X: (N, L)`` -> ``(L-1,)``. With them
    ``dL/da_i = -B_i C_i sum_l gamma^(l) a_i^l``; ``gamma^(0)`` only sees the second-to-last input.
    ``n`` overrides ``N`` when ``X`` carries all-zero padding rows (they add nothing to the sum).
    """
    N, L = X.shape
    N = N if n is None else n
    l = jnp.arange(L - 1)
    u = X[:, L - 2 - l]  # (N, L-1): column l is position L-l-2
    return 2.0 * (l + 1) / N * ((delta * xi) @ u)
