"""Controls for a poisoning effect: random perturbations of the same norm as the crafted ones."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def same_norm_random(key, delta: jax.Array, support: slice | None = None) -> jax.Array:
    """Per row, a ``U[-1,1]`` direction (restricted to ``support`` time positions, axis 1) rescaled to
    the row's ℓ2 norm. ``delta: (P, L)`` or ``(P, L, C)``."""
    r = jax.random.uniform(key, delta.shape, delta.dtype, -1.0, 1.0)
    if support is not None:
        mask = jnp.zeros(delta.shape[1], delta.dtype).at[support].set(1.0)
        r = r * mask.reshape((1, -1) + (1,) * (delta.ndim - 2))
    norm = lambda v: jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=1))
    scale = norm(delta) / jnp.maximum(norm(r), 1e-300)
    return r * scale.reshape((-1,) + (1,) * (delta.ndim - 1))
