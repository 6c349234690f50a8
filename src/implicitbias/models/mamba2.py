"""Mamba2: the selective state space block with the chunked SSD algorithm, in Equinox (docs/science.md §4).

Follows the structure of the Mamba2 block (and of the compact "mamba2-minimal" rewrite), with a
single B/C group. For an input ``u`` of shape ``(L, d_model)``:

1. ``in_proj`` maps each step to ``z`` (gate, ``d_inner``), ``xBC`` (``d_inner + 2 N``) and
   ``dt`` (one per head); ``d_inner = expand * d_model`` is split into ``n_heads`` heads of size
   ``headdim``.
2. ``xBC`` goes through a short causal depthwise convolution (width ``d_conv``) and SiLU, then is
   split into ``x (L, n_heads, headdim)``, ``B (L, N)`` and ``C (L, N)``.
3. ``dt = softplus(dt + dt_bias)``; ``A = -exp(A_log)`` is one scalar per head. Per head, the
   selective SSM is (state ``h_t`` of shape ``(headdim, N)``)::

       h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,    y_t = h_t C_t + D x_t

   computed by ``ssd_chunked``: exact quadratic attention-like products inside chunks of
   ``chunk_size`` steps plus a linear recurrence between chunks (the SSD decomposition).
4. ``y`` is gated, ``RMSNorm(y * SiLU(z))``, and projected back with ``out_proj``.

Float32 parameters. Shapes are for a single sequence; batch with ``jax.vmap``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

F32 = jnp.float32


def segsum(x: jax.Array) -> jax.Array:
    """Segment sums: ``out[..., i, j] = sum_{j < k <= i} x[..., k]`` for ``i >= j``, else ``-inf``.

    ``x`` has shape ``(..., T)``; the result ``(..., T, T)``. ``exp(segsum(a))`` is the lower
    triangular matrix of decays ``prod_{j<k<=i} exp(a_k)``. Computed by a masked cumulative sum
    (no subtraction of large cumulative sums, so it stays accurate).
    """
    T = x.shape[-1]
    xx = jnp.broadcast_to(x[..., :, None], x.shape + (T,))  # xx[..., i, j] = x[..., i]
    strict = jnp.tril(jnp.ones((T, T), bool), -1)
    cs = jnp.cumsum(jnp.where(strict, xx, 0.0), axis=-2)
    return jnp.where(jnp.tril(jnp.ones((T, T), bool)), cs, -jnp.inf)


def ssd_chunked(x: jax.Array, a: jax.Array, B: jax.Array, C: jax.Array, chunk_size: int) -> jax.Array:
    """The SSD scan ``h_t = exp(a_t) h_{t-1} + x_t B_t^T``, ``y_t = h_t C_t`` (``h_{-1} = 0``), by chunks.

    Shapes: ``x (L, n_heads, headdim)``, ``a (L, n_heads)`` (log-decays, ``dt * A``),
    ``B, C (L, N)`` (one group shared by all heads); returns ``y (L, n_heads, headdim)``.
    ``L`` need not divide by ``chunk_size``: the tail is zero-padded (which, by causality, does not
    change the first ``L`` outputs). The result does not depend on ``chunk_size`` (up to rounding).
    A sequence shorter than ``chunk_size`` is one chunk of its own length: padding a 12-token prompt
    to a checkpoint's chunk of 256 would cost ~20x in the quadratic within-chunk products for nothing.
    """
    L, h, p = x.shape
    n = B.shape[-1]
    chunk_size = min(chunk_size, L)
    pad = (-L) % chunk_size
    if pad:
        x = jnp.pad(x, ((0, pad), (0, 0), (0, 0)))
        a = jnp.pad(a, ((0, pad), (0, 0)))
        B = jnp.pad(B, ((0, pad), (0, 0)))
        C = jnp.pad(C, ((0, pad), (0, 0)))
    c = (L + pad) // chunk_size
    x = x.reshape(c, chunk_size, h, p)
    B = B.reshape(c, chunk_size, n)
    C = C.reshape(c, chunk_size, n)
    a = a.reshape(c, chunk_size, h).transpose(2, 0, 1)  # (h, c, l)
    a_cum = jnp.cumsum(a, axis=-1)

    # 1. Within each chunk: y_l = sum_{s<=l} (C_l . B_s) exp(a_{s+1} + ... + a_l) x_s.
    decay = jnp.exp(segsum(a))  # (h, c, l, s)
    scores = jnp.einsum("cln,csn->cls", C, B)[None] * decay  # (h, c, l, s)
    y_diag = jnp.einsum("hcls,cshp->clhp", scores, x)

    # 2. State at the end of each chunk from that chunk's inputs alone.
    decay_states = jnp.exp(a_cum[..., -1:] - a_cum).transpose(1, 2, 0)  # (c, l, h)
    states = jnp.einsum("cln,clhp->chpn", B, x * decay_states[..., None])

    # 3. Recurrence between chunks: the state entering each chunk.
    states = jnp.concatenate([jnp.zeros((1, h, p, n), states.dtype), states], axis=0)
    decay_chunk = jnp.exp(segsum(jnp.pad(a_cum[..., -1], ((0, 0), (1, 0)))))  # (h, c+1, c+1)
    states = jnp.einsum("hzc,chpn->zhpn", decay_chunk, states)[:-1]  # (c, h, p, n)

    # 4. Contribution of the entering state to each output of the chunk.
    y_off = jnp.einsum("cln,chpn->clhp", C, states) * jnp.exp(a_cum).transpose(1, 2, 0)[..., None]
    return (y_diag + y_off).reshape(c * chunk_size, h, p)[:L]


def causal_conv(v: jax.Array, weight: jax.Array, bias: jax.Array) -> jax.Array:
    """Causal depthwise convolution ``out_t = bias + sum_k w_k v_{t - (K-1) + k}`` (zero history):
    ``v (L, ch)``, ``weight (K, ch)``, ``bias (ch,)``; PyTorch's ``Conv1d(groups=ch, padding=K-1)``
    cut to the first ``L`` outputs, whose weight ``(ch, 1, K)`` is ``weight.T``."""
    K = weight.shape[0]
    L = v.shape[0]
    vp = jnp.pad(v, ((K - 1, 0), (0, 0)))
    return bias + sum(weight[k] * vp[k : k + L] for k in range(K))


class Mamba2Block(eqx.Module):
    """One Mamba2 block (single group): ``(L, d_model) -> (L, d_model)``, causal."""

    in_proj: eqx.nn.Linear
    conv_weight: jax.Array  # (d_conv, conv_dim), depthwise
    conv_bias: jax.Array  # (conv_dim,)
    dt_bias: jax.Array  # (n_heads,)
    A_log: jax.Array  # (n_heads,)
    D: jax.Array  # (n_heads,)
    norm_weight: jax.Array  # (d_inner,)
    out_proj: eqx.nn.Linear
    d_inner: int = eqx.field(static=True)
    n_heads: int = eqx.field(static=True)
    headdim: int = eqx.field(static=True)
    d_state: int = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    norm_eps: float = eqx.field(static=True)  # the gated RMS norm's epsilon

    def __init__(self, d_model: int, d_state: int, *, expand: int = 2, headdim: int = 16, d_conv: int = 4,
                 chunk_size: int = 16, dt_min: float = 1e-3, dt_max: float = 1e-1, norm_eps: float = 1e-5,
                 key: jax.Array):
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"expand * d_model = {d_inner} must be a multiple of headdim = {headdim}")
        n_heads = d_inner // headdim
        conv_dim = d_inner + 2 * d_state
        k_in, k_cw, k_cb, k_dt, k_a, k_out = jax.random.split(key, 6)
        self.in_proj = eqx.nn.Linear(d_model, 2 * d_inner + 2 * d_state + n_heads, use_bias=False, key=k_in, dtype=F32)
        bound = 1.0 / math.sqrt(d_conv)  # PyTorch's default for a depthwise Conv1d
        self.conv_weight = jax.random.uniform(k_cw, (d_conv, conv_dim), F32, -bound, bound)
        self.conv_bias = jax.random.uniform(k_cb, (conv_dim,), F32, -bound, bound)
        dt = jnp.exp(jax.random.uniform(k_dt, (n_heads,), F32, math.log(dt_min), math.log(dt_max)))
        dt = jnp.maximum(dt, 1e-4)
        self.dt_bias = dt + jnp.log(-jnp.expm1(-dt))  # inverse softplus
        self.A_log = jnp.log(jax.random.uniform(k_a, (n_heads,), F32, 1.0, 16.0))
        self.D = jnp.ones((n_heads,), F32)
        self.norm_weight = jnp.ones((d_inner,), F32)
        self.out_proj = eqx.nn.Linear(d_inner, d_model, use_bias=False, key=k_out, dtype=F32)
        self.d_inner, self.n_heads, self.headdim, self.d_state = d_inner, n_heads, headdim, d_state
        self.chunk_size, self.norm_eps = chunk_size, norm_eps

    def _conv(self, v: jax.Array) -> jax.Array:
        return causal_conv(v, self.conv_weight, self.conv_bias)

    def inputs(self, u: jax.Array) -> tuple[jax.Array, ...]:
        """Selective SSM inputs ``(x, dt, A, B, C, z)`` for ``u (L, d_model)``."""
        zxbcdt = jax.vmap(self.in_proj)(u)
        z, xBC, dt = jnp.split(zxbcdt, [self.d_inner, 2 * self.d_inner + 2 * self.d_state], axis=-1)
        dt = jax.nn.softplus(dt + self.dt_bias)  # (L, n_heads)
        xBC = jax.nn.silu(self._conv(xBC))
        x, B, C = jnp.split(xBC, [self.d_inner, self.d_inner + self.d_state], axis=-1)
        x = x.reshape(u.shape[0], self.n_heads, self.headdim)
        A = -jnp.exp(self.A_log)
        return x, dt, A, B, C, z

    def output(self, y: jax.Array, x: jax.Array, z: jax.Array) -> jax.Array:
        """The block's output from the scan's ``y (L, n_heads, headdim)``: the ``D`` skip, the gate
        ``SiLU(z)``, the gated RMS norm over ``d_inner`` and ``out_proj``."""
        y = (y + x * self.D[:, None]).reshape(x.shape[0], self.d_inner)
        y = y * jax.nn.silu(z)
        y = y * jax.lax.rsqrt(jnp.mean(y * y, axis=-1, keepdims=True) + self.norm_eps) * self.norm_weight
        return jax.vmap(self.out_proj)(y)

    def __call__(self, u: jax.Array, chunk_size: int | None = None) -> jax.Array:
        x, dt, A, B, C, z = self.inputs(u)
        return self.output(ssd_chunked(x * dt[..., None], A * dt, B, C, chunk_size or self.chunk_size), x, z)
