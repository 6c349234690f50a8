"""A small causal transformer language model with rotary positions and a KV cache: the policy of the
equation-chain GRPO experiment (docs/science.md, §5 GRPO).

``tokens (L,)`` -> token embedding -> ``n_layers`` pre-RMSNorm blocks ``h <- h + attn(norm(h))``,
``h <- h + mlp(norm(h))`` -> final RMSNorm -> logits ``(L, vocab)``, the head tied to the embedding.
Attention: ``n_heads`` heads, queries and keys rotated by their position (RoPE, base 10,000; Su et al.
2021), so a score depends on positions only through their difference and a prompt or a derivation
longer than those seen in training meets no unseen position embedding. MLP ``d -> 4d -> d`` with GELU.
No biases. Float32; one sequence (batch with ``jax.vmap``).

Decoding with a cache: :meth:`PolicyLM.prefill` runs the prompt and returns its logits and a
:class:`Cache` of keys and values sized for ``max_len`` positions; :meth:`PolicyLM.step` feeds one token
at a position and returns the next logits and the updated cache. Both equal the full forward
:meth:`PolicyLM.__call__` on the same prefix (the tests check it).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

F32 = jnp.float32
NORM_EPS = 1e-6
ROPE_BASE = 10_000.0


def rms_norm(x: jax.Array, weight: jax.Array, eps: float = NORM_EPS) -> jax.Array:
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last axis."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotate ``x (L, n_heads, head_dim)`` by ``positions (L,)``: pairs ``(x_i, x_{i + head_dim/2})`` turn by
    ``position * base^(-2i / head_dim)`` (the half-split layout of GPT-NeoX and Llama)."""
    half = x.shape[-1] // 2
    freq = ROPE_BASE ** (-jnp.arange(half, dtype=F32) / half)
    angle = positions.astype(F32)[:, None] * freq[None]  # (L, half)
    cos, sin = jnp.cos(angle)[:, None], jnp.sin(angle)[:, None]
    a, b = x[..., :half], x[..., half:]
    return jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


ATTN_BLOCK = 64  # query block of the causal attention (causal_attention)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, block: int = ATTN_BLOCK) -> jax.Array:
    """``softmax(q k^T / sqrt(head_dim) + causal mask) v`` for ``q, k, v (L, n_heads, head_dim)`` -> ``(L, n_heads,
    head_dim)``, by blocks of ``block`` queries, each against the keys up to its end: the scores above the
    diagonal blocks are never formed (about half of them at long lengths), which is what the update's
    backward pass holds and reads (benchmarks/bench_grpo.py)."""
    L = q.shape[0]
    scale = 1.0 / math.sqrt(q.shape[-1])
    outs = []
    for start in range(0, L, block):
        end = min(start + block, L)
        scores = jnp.einsum("thd,shd->hts", q[start:end], k[:end]) * scale
        mask = jnp.arange(end)[None, :] <= jnp.arange(start, end)[:, None]  # (end - start, end)
        w = jax.nn.softmax(jnp.where(mask[None], scores, -jnp.inf), axis=-1)
        outs.append(jnp.einsum("hts,shd->thd", w, v[:end]))
    return jnp.concatenate(outs, axis=0)


class Cache(NamedTuple):
    """Keys and values of every layer, ``(n_layers, n_heads, max_len, head_dim)`` each (rotated keys). Head-major,
    so that a decoding step reads each head's keys as one contiguous block (a position-major cache made XLA
    transpose the whole cache at every step, about twice as slow a decoding at 315 positions:
    benchmarks/bench_grpo.py)."""

    k: jax.Array
    v: jax.Array


class PolicyBlock(eqx.Module):
    """One pre-RMSNorm block with rotary attention: ``h (L, d_model) -> h (L, d_model)``, causal."""

    norm1: jax.Array  # (d_model,)
    w_qkv: jax.Array  # (d_model, 3 d_model)
    w_out: jax.Array  # (d_model, d_model)
    norm2: jax.Array  # (d_model,)
    w_fc: jax.Array  # (d_model, 4 d_model)
    w_proj: jax.Array  # (4 d_model, d_model)
    n_heads: int = eqx.field(static=True)

    def __init__(self, d_model: int, n_heads: int, n_layers: int, *, key: jax.Array):
        """Weights ``N(0, 0.02^2)``; the two projections into the residual stream ``N(0, (0.02 / sqrt(2
        n_layers))^2)`` (GPT-2's scaling, so the residual's variance does not grow with depth); norms 1."""
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"d_model {d_model} must be n_heads {n_heads} x an even head size")
        k1, k2, k3, k4 = jax.random.split(key, 4)
        resid = 0.02 / math.sqrt(2 * n_layers)
        self.norm1, self.norm2 = jnp.ones((d_model,), F32), jnp.ones((d_model,), F32)
        self.w_qkv = 0.02 * jax.random.normal(k1, (d_model, 3 * d_model), F32)
        self.w_out = resid * jax.random.normal(k2, (d_model, d_model), F32)
        self.w_fc = 0.02 * jax.random.normal(k3, (d_model, 4 * d_model), F32)
        self.w_proj = resid * jax.random.normal(k4, (4 * d_model, d_model), F32)
        self.n_heads = n_heads

    def qkv(self, h: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Rotated queries and keys and the values, ``(L, n_heads, head_dim)``, of ``h (L, d_model)``."""
        L, d = h.shape
        q, k, v = jnp.split(rms_norm(h, self.norm1) @ self.w_qkv, 3, axis=-1)
        q, k, v = (a.reshape(L, self.n_heads, d // self.n_heads) for a in (q, k, v))
        return rope(q, positions), rope(k, positions), v

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        """Causal attention (:func:`causal_attention`) of ``q, k, v (L, n_heads, head_dim)``; ``(L, d_model)``
        after the output projection."""
        return causal_attention(q, k, v).reshape(q.shape[0], -1) @ self.w_out

    def attend_cached(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
        """One query ``q (n_heads, head_dim)`` against a head-major cache ``k, v (n_heads, S, head_dim)`` over
        the positions ``mask (S,)`` allows: ``(1, d_model)`` after the output projection."""
        scores = jnp.einsum("hd,hsd->hs", q, k) / math.sqrt(q.shape[-1])
        w = jax.nn.softmax(jnp.where(mask[None], scores, -jnp.inf), axis=-1)
        return jnp.einsum("hs,hsd->hd", w, v).reshape(1, -1) @ self.w_out

    def mlp(self, h: jax.Array) -> jax.Array:
        return jax.nn.gelu(rms_norm(h, self.norm2) @ self.w_fc) @ self.w_proj


class PolicyLM(eqx.Module):
    """The policy: ``tokens (L,) int -> logits (L, vocab)``, causal, any length (rotary positions)."""

    embedding: jax.Array  # (vocab, d_model), also the head (tied)
    blocks: tuple  # n_layers PolicyBlock
    norm_f: jax.Array  # (d_model,)

    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int, *, key: jax.Array):
        k_emb, *k_blocks = jax.random.split(key, n_layers + 1)
        self.embedding = 0.02 * jax.random.normal(k_emb, (vocab, d_model), F32)
        self.blocks = tuple(PolicyBlock(d_model, n_heads, n_layers, key=k) for k in k_blocks)
        self.norm_f = jnp.ones((d_model,), F32)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def logits(self, h: jax.Array) -> jax.Array:
        return rms_norm(h, self.norm_f) @ self.embedding.T

    def __call__(self, tokens: jax.Array) -> jax.Array:
        L = tokens.shape[0]
        positions = jnp.arange(L)
        h = self.embedding[tokens]
        for blk in self.blocks:
            q, k, v = blk.qkv(h, positions)
            h = h + blk.attend(q, k, v)
            h = h + blk.mlp(h)
        return self.logits(h)

    def prefill(self, tokens: jax.Array, max_len: int) -> tuple[jax.Array, Cache]:
        """The full forward on the prompt ``tokens (L,)`` and a cache for ``max_len >= L`` positions."""
        L = tokens.shape[0]
        if max_len < L:
            raise ValueError(f"max_len {max_len} is shorter than the prompt ({L} tokens)")
        positions = jnp.arange(L)
        h = self.embedding[tokens]
        ks, vs = [], []
        for blk in self.blocks:
            q, k, v = blk.qkv(h, positions)
            h = h + blk.attend(q, k, v)
            h = h + blk.mlp(h)
            pad = ((0, 0), (0, max_len - L), (0, 0))
            ks.append(jnp.pad(k.transpose(1, 0, 2), pad))
            vs.append(jnp.pad(v.transpose(1, 0, 2), pad))
        return self.logits(h), Cache(jnp.stack(ks), jnp.stack(vs))

    def step(self, token: jax.Array, position: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
        """Feed ``token`` (scalar int) at ``position`` (scalar int, the cache holds ``0 .. position - 1``):
        the next-token logits ``(vocab,)`` and the cache with this position written."""
        max_len = cache.k.shape[2]
        mask = jnp.arange(max_len) <= position  # (max_len,)
        h = self.embedding[token][None]
        ks, vs = cache.k, cache.v
        position = jnp.asarray(position, jnp.int32)
        zero = jnp.zeros((), jnp.int32)
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.qkv(h, position[None])  # (1, n_heads, head_dim)
            at = (jnp.asarray(i, jnp.int32), zero, position, zero)
            ks = jax.lax.dynamic_update_slice(ks, k.transpose(1, 0, 2)[None], at)
            vs = jax.lax.dynamic_update_slice(vs, v.transpose(1, 0, 2)[None], at)
            h = h + blk.attend_cached(q[0], ks[i], vs[i], mask)
            h = h + blk.mlp(h)
        return self.logits(h)[0], Cache(ks, vs)
