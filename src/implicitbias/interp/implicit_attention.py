"""The implicit attention of a selective SSM, materialised (docs/science.md §6).

A selective scan is a data-dependent causal linear map, ``y_t = sum_{s <= t} alpha(t, s) u_s``:

* **Mamba-1** (per channel ``d``, states ``n``; the Hugging Face / mamba_ssm discretisation
  ``dA_t = exp(delta_t A)``, ``dB_t = delta_t B_t``)::

      alpha(t, s)[d] = sum_n C_t[n] (prod_{k=s+1..t} dA_k[d, n]) delta_s[d] B_s[n]

* **Mamba-2** (per head ``h``, one B/C group)::

      alpha(t, s)[h] = (C_t . B_s) exp(sum_{k=s+1..t} dt_{k,h} A_h) dt_{s,h}

``alpha`` is ``(L, L, width)``: for plots and heatmaps, and the independent check of the knockout
(:mod:`.knockout` never builds it). The ``D`` skip and the gate are not part of it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..models.mamba2 import segsum


def alpha_mamba1(delta: jax.Array, A: jax.Array, B: jax.Array, C: jax.Array) -> jax.Array:
    """Mamba-1's ``alpha``: ``delta (L, d)`` (after softplus), ``A (d, N)`` (negative), ``B, C (L, N)``;
    returns ``(L, L, d)``, zero above the diagonal."""
    log_decay = (delta[:, :, None] * A[None]).transpose(1, 2, 0)  # (d, N, L)
    decay = jnp.exp(segsum(log_decay))  # (d, N, t, s): prod_{s<k<=t} dA_k, 0 for s > t
    return jnp.einsum("tn,dnts,sd,sn->tsd", C, decay, delta, B)


def alpha_mamba2(dt: jax.Array, A: jax.Array, B: jax.Array, C: jax.Array) -> jax.Array:
    """Mamba-2's ``alpha``: ``dt (L, n_heads)`` (after softplus), ``A (n_heads,)`` (negative),
    ``B, C (L, N)``; returns ``(L, L, n_heads)``, zero above the diagonal."""
    decay = jnp.exp(segsum((dt * A).T))  # (h, t, s)
    return jnp.einsum("tn,sn,hts,sh->tsh", C, B, decay, dt)


def apply_alpha(alpha: jax.Array, u: jax.Array) -> jax.Array:
    """``y_t = sum_s alpha(t, s) u_s``: ``alpha (L, L, width)``, ``u (L, width)`` or ``(L, width, p)``
    (Mamba-2's head channels); returns ``u``'s shape."""
    return jnp.einsum("tsw,sw...->tw...", alpha, u)


def knock_out_alpha(alpha: jax.Array, sources: jax.Array, targets: jax.Array,
                    exempt: jax.Array | None = None) -> jax.Array:
    """``alpha`` with the entries ``(t, s)``, ``t`` in ``targets``, ``s`` in ``sources``, set to zero on
    the channels / heads not ``exempt`` (the definition the two-scan knockout implements)."""
    width = alpha.shape[-1]
    keep = jnp.zeros((width,), bool) if exempt is None else exempt
    hit = targets[:, None, None] & sources[None, :, None] & ~keep[None, None, :]
    return jnp.where(hit, 0.0, alpha)
