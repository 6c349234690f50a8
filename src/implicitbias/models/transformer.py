"""A tiny GPT-2-style causal transformer language model: the transformer baseline of the knockout
study (docs/science.md §6; arXiv 2505.24244 compares Mamba with GPT-2 and Llama).

``tokens (L,)`` -> token embedding + learned positional embedding -> ``n_layers`` pre-LayerNorm
blocks ``h <- h + attn(LN(h))``, ``h <- h + mlp(LN(h))`` -> final LayerNorm -> logits ``(L, vocab)``
with the head tied to the token embedding (Hugging Face's ``GPT2LMHeadModel``). Attention: ``n_heads``
heads of size ``d_model / n_heads``, scores ``q k^T / sqrt(head_dim)``; MLP ``d -> 4d -> d`` with
GPT-2's tanh-approximated GELU. Weights in GPT-2's ``Conv1D`` layout (``x @ W + b``, ``W (in, out)``).
Float32; one sequence (batch with ``jax.vmap``).

Every attention takes an ``allowed (L, L)`` bool mask on top of causality, the hook of the attention
knockout (:func:`implicitbias.interp.attention_knockout.knockout_transformer_logits`): a key ``s <= t``
that is not allowed for query ``t`` gets the score ``finfo(dtype).min``, so that the softmax gives it
weight exactly 0 and renormalises over the remaining keys; future keys get ``-inf``. A row whose every
causal key is knocked out is then uniform over its causal keys ``0..t`` (all at ``finfo.min``), as in
the authors' GPT-2 knockout under Hugging Face's eager attention (:func:`masked_scores`).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

F32 = jnp.float32
LN_EPS = 1e-5  # GPT-2's layer_norm_epsilon


def layer_norm(x: jax.Array, weight: jax.Array, bias: jax.Array, eps: float = LN_EPS) -> jax.Array:
    """LayerNorm over the last axis (biased variance, as ``torch.nn.LayerNorm``)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * weight + bias


def gelu(x: jax.Array) -> jax.Array:
    """GPT-2's GELU (``gelu_new``): ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``."""
    return jax.nn.gelu(x, approximate=True)


def masked_scores(scores: jax.Array, allowed: jax.Array) -> jax.Array:
    """Causal, knocked-out attention scores: ``scores (..., L, L)`` (query, key), ``allowed (L, L)`` bool.

    A causal key that is not allowed gets ``finfo(dtype).min``: the authors add that number to the
    scores (``(1 - mask) * finfo.min``), and in float32 ``score + finfo.min == finfo.min`` for any
    ``|score| < 2^103``, so this is the same number without the addition. Its weight after the softmax
    is exactly 0 while the row keeps one allowed key. Future keys get ``-inf``: then a row with every
    causal key knocked out is uniform over ``0..t`` rather than attending to the future.
    """
    L = scores.shape[-1]
    causal = jnp.tril(jnp.ones((L, L), bool))
    knocked = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
    return jnp.where(causal, knocked, -jnp.inf)


def attention_probs(q: jax.Array, k: jax.Array, allowed: jax.Array) -> jax.Array:
    """The attention weights ``(n_heads, L, L)`` (query, key) of ``q, k (L, n_heads, head_dim)``."""
    scores = jnp.einsum("thd,shd->hts", q, k) / math.sqrt(q.shape[-1])
    return jax.nn.softmax(masked_scores(scores, allowed), axis=-1)


def init_normal(key: jax.Array, shape: tuple[int, ...], std: float) -> jax.Array:
    """``N(0, std^2)`` in float32 (GPT-2's ``initializer_range`` is 0.02)."""
    return std * jax.random.normal(key, shape, F32)


class TransformerBlock(eqx.Module):
    """One pre-LayerNorm GPT-2 block: ``h (L, d_model) -> h (L, d_model)``, causal."""

    ln1_weight: jax.Array  # (d_model,)
    ln1_bias: jax.Array  # (d_model,)
    w_qkv: jax.Array  # (d_model, 3 d_model): q, k, v in that order (GPT-2's c_attn)
    b_qkv: jax.Array  # (3 d_model,)
    w_out: jax.Array  # (d_model, d_model): the heads' concatenation to the residual (attn.c_proj)
    b_out: jax.Array  # (d_model,)
    ln2_weight: jax.Array  # (d_model,)
    ln2_bias: jax.Array  # (d_model,)
    w_fc: jax.Array  # (d_model, 4 d_model) (mlp.c_fc)
    b_fc: jax.Array  # (4 d_model,)
    w_proj: jax.Array  # (4 d_model, d_model) (mlp.c_proj)
    b_proj: jax.Array  # (d_model,)
    n_heads: int = eqx.field(static=True)

    def __init__(self, d_model: int, n_heads: int, n_layers: int, *, key: jax.Array):
        """GPT-2's initialisation: weights ``N(0, 0.02^2)``, the two projections into the residual
        stream ``N(0, (0.02 / sqrt(2 n_layers))^2)`` (so the residual's variance does not grow with
        depth), biases 0, LayerNorms ``(1, 0)``."""
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be a multiple of n_heads {n_heads}")
        k_qkv, k_out, k_fc, k_proj = jax.random.split(key, 4)
        resid_std = 0.02 / math.sqrt(2 * n_layers)
        ones, zeros = jnp.ones((d_model,), F32), jnp.zeros((d_model,), F32)
        self.ln1_weight, self.ln1_bias, self.ln2_weight, self.ln2_bias = ones, zeros, ones, zeros
        self.w_qkv, self.b_qkv = init_normal(k_qkv, (d_model, 3 * d_model), 0.02), jnp.zeros((3 * d_model,), F32)
        self.w_out, self.b_out = init_normal(k_out, (d_model, d_model), resid_std), zeros
        self.w_fc, self.b_fc = init_normal(k_fc, (d_model, 4 * d_model), 0.02), jnp.zeros((4 * d_model,), F32)
        self.w_proj, self.b_proj = init_normal(k_proj, (4 * d_model, d_model), resid_std), zeros
        self.n_heads = n_heads

    def qkv(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Queries, keys and values ``(L, n_heads, head_dim)`` of the residual stream ``h (L, d_model)``."""
        x = layer_norm(h, self.ln1_weight, self.ln1_bias)
        L, d = h.shape
        q, k, v = jnp.split(x @ self.w_qkv + self.b_qkv, 3, axis=-1)
        return tuple(a.reshape(L, self.n_heads, d // self.n_heads) for a in (q, k, v))

    def attention_weights(self, h: jax.Array, allowed: jax.Array) -> jax.Array:
        """The attention weights ``(n_heads, L, L)`` (query, key) for ``h (L, d_model)``, ``allowed (L, L)``."""
        q, k, _ = self.qkv(h)
        return attention_probs(q, k, allowed)

    def attention(self, h: jax.Array, allowed: jax.Array) -> jax.Array:
        """The attention's output ``(L, d_model)`` (before the residual) with ``allowed (L, L)`` bool."""
        q, k, v = self.qkv(h)
        heads = jnp.einsum("hts,shd->thd", attention_probs(q, k, allowed), v)
        return heads.reshape(h.shape) @ self.w_out + self.b_out

    def mlp(self, h: jax.Array) -> jax.Array:
        """``d -> 4d -> d`` with GELU on ``LN(h)`` (before the residual), ``(L, d_model)``."""
        x = layer_norm(h, self.ln2_weight, self.ln2_bias)
        return gelu(x @ self.w_fc + self.b_fc) @ self.w_proj + self.b_proj

    def __call__(self, h: jax.Array, allowed: jax.Array) -> jax.Array:
        h = h + self.attention(h, allowed)
        return h + self.mlp(h)


class TransformerLM(eqx.Module):
    """A GPT-2-style language model: ``tokens (L,) int -> logits (L, vocab)``, causal, ``L <= max_len``."""

    embedding: jax.Array  # (vocab, d_model), also the head (tied)
    positions: jax.Array  # (max_len, d_model): learned positional embedding
    blocks: tuple  # n_layers TransformerBlock
    ln_f_weight: jax.Array  # (d_model,)
    ln_f_bias: jax.Array  # (d_model,)

    @property
    def kind(self) -> str:
        return "transformer"

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def max_len(self) -> int:
        return self.positions.shape[0]

    def embed(self, tokens: jax.Array) -> jax.Array:
        """The residual stream entering block 0, ``(L, d_model)``."""
        L = tokens.shape[0]
        if L > self.max_len:
            raise ValueError(f"{L} tokens exceed the positional embedding's max_len {self.max_len}")
        return self.embedding[tokens] + self.positions[:L]

    def logits(self, h: jax.Array) -> jax.Array:
        """Logits from the residual stream ``h (L, d_model)``: final LayerNorm and the tied head."""
        return layer_norm(h, self.ln_f_weight, self.ln_f_bias) @ self.embedding.T

    def forward(self, tokens: jax.Array, allowed: jax.Array) -> jax.Array:
        """Logits ``(L, vocab)`` with ``allowed (n_layers, L, L)`` bool: layer ``i``'s attention masks
        every ``(query, key)`` not in ``allowed[i]`` on top of causality (:func:`masked_scores`)."""
        h = self.embed(tokens)
        for block, a in zip(self.blocks, allowed):
            h = block(h, a)
        return self.logits(h)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        # the knockout's code path with nothing knocked out, so that an empty knockout is this bit for bit
        L = tokens.shape[0]
        return self.forward(tokens, jnp.ones((self.n_layers, L, L), bool))


def make_transformer(vocab: int, d_model: int, n_layers: int, n_heads: int, max_len: int, *,
                     key: jax.Array) -> TransformerLM:
    """A randomly initialised :class:`TransformerLM` (GPT-2's initialisation: embeddings ``N(0, 0.02^2)``,
    :class:`TransformerBlock` for the blocks, final LayerNorm ``(1, 0)``)."""
    k_emb, k_pos, *k_blocks = jax.random.split(key, n_layers + 2)
    blocks = tuple(TransformerBlock(d_model, n_heads, n_layers, key=k) for k in k_blocks)
    return TransformerLM(init_normal(k_emb, (vocab, d_model), 0.02), init_normal(k_pos, (max_len, d_model), 0.02),
                         blocks, jnp.ones((d_model,), F32), jnp.zeros((d_model,), F32))
