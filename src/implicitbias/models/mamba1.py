"""Mamba-1: the selective-scan block, in the Hugging Face / mamba_ssm parameter layout (docs/science.md §6).

For an input ``u`` of shape ``(L, d_model)`` (``MambaMixer.slow_forward`` of ``transformers``):

1. ``in_proj`` maps each step to ``x`` and the gate ``z`` (``d_inner`` each, in that order);
2. ``x`` goes through a causal depthwise convolution of width ``d_conv`` and SiLU;
3. ``x_proj`` gives ``(dt_rank, N, N)``: the step's low-rank ``delta``, ``B_t`` and ``C_t``
   (Falcon-Mamba: each through a weightless RMS norm, ``rms_bcdt``); ``delta = softplus(dt_proj(.))``
   ``(L, d_inner)``; ``A = -exp(A_log)`` ``(d_inner, N)``;
4. per channel ``d`` and state ``n``: ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t``,
   ``y_t = h_t C_t + D x_t`` (:func:`selective_scan`);
5. ``y * SiLU(z)`` through ``out_proj``.

Float32 parameters; shapes for one sequence (batch with ``jax.vmap``). The knockout of the scan is in
:mod:`implicitbias.interp.knockout`, which uses :meth:`Mamba1Block.ssm_inputs` and
:meth:`Mamba1Block.output`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from .mamba2 import causal_conv

F32 = jnp.float32


def selective_scan(dA: jax.Array, dBu: jax.Array, C: jax.Array) -> jax.Array:
    """Mamba-1's scan ``h_t = dA_t * h_{t-1} + dBu_t``, ``y_t = h_t C_t`` (``h_{-1} = 0``).

    Shapes: ``dA, dBu (L, d, N)`` (``exp(delta_t A)`` and ``delta_t B_t u_t``), ``C (L, N)``; returns
    ``y (L, d)``. A sequential ``lax.scan`` over time, the order of the reference implementation.
    """

    def step(h, inputs):
        a, bu, c = inputs
        h = a * h + bu
        return h, h @ c

    h0 = jnp.zeros(dA.shape[1:], jnp.result_type(dA, dBu))
    return jax.lax.scan(step, h0, (dA, dBu, C))[1]


def rms(x: jax.Array, eps: float) -> jax.Array:
    """Weightless RMS normalisation over the last axis (Falcon-Mamba's ``rms_forward``)."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)


class Mamba1Block(eqx.Module):
    """One Mamba-1 mixer: ``(L, d_model) -> (L, d_model)``, causal."""

    in_proj: eqx.nn.Linear  # d_model -> 2 d_inner (x, z)
    conv_weight: jax.Array  # (d_conv, d_inner); HF conv1d.weight (d_inner, 1, d_conv) transposed
    conv_bias: jax.Array  # (d_inner,)
    x_proj: eqx.nn.Linear  # d_inner -> dt_rank + 2 N, no bias
    dt_proj: eqx.nn.Linear  # dt_rank -> d_inner, with bias
    A_log: jax.Array  # (d_inner, N)
    D: jax.Array  # (d_inner,)
    out_proj: eqx.nn.Linear  # d_inner -> d_model
    d_inner: int = eqx.field(static=True)
    d_state: int = eqx.field(static=True)
    dt_rank: int = eqx.field(static=True)
    rms_bcdt: bool = eqx.field(static=True)
    rms_eps: float = eqx.field(static=True)

    def __init__(self, d_model: int, d_state: int = 16, *, expand: int = 2, d_conv: int = 4, dt_rank: int = 0,
                 dt_min: float = 1e-3, dt_max: float = 0.1, rms_bcdt: bool = False, rms_eps: float = 1e-6,
                 use_bias: bool = False, conv_bias: bool = True, key: jax.Array):
        """mamba_ssm's initialisation: ``dt_rank = ceil(d_model / 16)`` (0 = that), ``dt_proj`` weights
        ``U(+-dt_rank^-1/2)`` and bias the inverse softplus of a log-uniform ``dt`` in
        ``[dt_min, dt_max]``, ``A_log = log(1..N)`` in every channel, ``D = 1``."""
        d_inner = expand * d_model
        dt_rank = dt_rank or math.ceil(d_model / 16)
        k_in, k_cw, k_cb, k_x, k_dw, k_dt, k_out = jax.random.split(key, 7)
        self.in_proj = eqx.nn.Linear(d_model, 2 * d_inner, use_bias=use_bias, key=k_in, dtype=F32)
        bound = 1.0 / math.sqrt(d_conv)  # PyTorch's default for a depthwise Conv1d
        self.conv_weight = jax.random.uniform(k_cw, (d_conv, d_inner), F32, -bound, bound)
        self.conv_bias = (jax.random.uniform(k_cb, (d_inner,), F32, -bound, bound) if conv_bias
                          else jnp.zeros((d_inner,), F32))
        self.x_proj = eqx.nn.Linear(d_inner, dt_rank + 2 * d_state, use_bias=False, key=k_x, dtype=F32)
        std = dt_rank ** -0.5
        dt = jnp.exp(jax.random.uniform(k_dt, (d_inner,), F32, math.log(dt_min), math.log(dt_max)))
        dt = jnp.maximum(dt, 1e-4)
        self.dt_proj = eqx.nn.Linear(dt_rank, d_inner, key=k_dw, dtype=F32)
        self.dt_proj = eqx.tree_at(lambda m: (m.weight, m.bias), self.dt_proj,
                                   (jax.random.uniform(k_dw, (d_inner, dt_rank), F32, -std, std),
                                    dt + jnp.log(-jnp.expm1(-dt))))
        self.A_log = jnp.log(jnp.broadcast_to(jnp.arange(1, d_state + 1, dtype=F32), (d_inner, d_state)))
        self.D = jnp.ones((d_inner,), F32)
        self.out_proj = eqx.nn.Linear(d_inner, d_model, use_bias=use_bias, key=k_out, dtype=F32)
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.rms_bcdt, self.rms_eps = rms_bcdt, rms_eps

    def ssm_inputs(self, u: jax.Array) -> tuple[jax.Array, ...]:
        """``(x, delta, A, B, C, z)`` for ``u (L, d_model)``: ``x, delta, z (L, d_inner)``,
        ``A (d_inner, N)``, ``B, C (L, N)``."""
        x, z = jnp.split(jax.vmap(self.in_proj)(u), 2, axis=-1)
        x = jax.nn.silu(causal_conv(x, self.conv_weight, self.conv_bias))
        step, B, C = jnp.split(jax.vmap(self.x_proj)(x), [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
        if self.rms_bcdt:  # Falcon-Mamba
            step, B, C = rms(step, self.rms_eps), rms(B, self.rms_eps), rms(C, self.rms_eps)
        delta = jax.nn.softplus(jax.vmap(self.dt_proj)(step))
        return x, delta, -jnp.exp(self.A_log), B, C, z

    @staticmethod
    def discretize(x, delta, A, B) -> tuple[jax.Array, jax.Array]:
        """``dA = exp(delta A)`` and ``dBu = delta B x``, both ``(L, d_inner, N)``."""
        return jnp.exp(delta[:, :, None] * A[None]), delta[:, :, None] * B[:, None, :] * x[:, :, None]

    def output(self, y: jax.Array, x: jax.Array, z: jax.Array) -> jax.Array:
        """The block's output from the scan's ``y (L, d_inner)``: ``out_proj((y + D x) SiLU(z))``."""
        return jax.vmap(self.out_proj)((y + x * self.D) * jax.nn.silu(z))

    def __call__(self, u: jax.Array) -> jax.Array:
        x, delta, A, B, C, z = self.ssm_inputs(u)
        return self.output(selective_scan(*self.discretize(x, delta, A, B), C), x, z)
