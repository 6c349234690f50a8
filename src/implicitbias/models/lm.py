"""Mamba-1 and Mamba-2 language models (docs/science.md §6): the Hugging Face ``MambaForCausalLM`` /
``Mamba2ForCausalLM`` structure.

``tokens (L,)`` -> embedding -> ``n_layers`` residual blocks ``h <- h + mixer(RMSNorm(h))`` -> final
RMSNorm -> logits ``(L, vocab)`` with the head tied to the embedding (or an untied one, as
Hugging Face's ``Mamba2Config`` defaults to). The mixers are
:class:`~implicitbias.models.mamba1.Mamba1Block` or :class:`~implicitbias.models.mamba2.Mamba2Block`
(one B/C group). Float32; one sequence (batch with ``jax.vmap``). Checkpoints in the Hugging Face
layout load with :func:`implicitbias.models.checkpoints.load_lm`; the knockout forward is
:func:`implicitbias.interp.knockout.knockout_logits`.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp

from .mamba1 import Mamba1Block
from .mamba2 import Mamba2Block

F32 = jnp.float32
Kind = Literal["mamba1", "mamba2"]


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last axis (HF ``MambaRMSNorm``)."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * weight


class MambaLM(eqx.Module):
    """A Mamba-1 or Mamba-2 language model: ``tokens (L,) int -> logits (L, vocab)``, causal."""

    embedding: jax.Array  # (vocab, d_model), also the head (tied)
    norms: jax.Array  # (n_layers, d_model): each block's RMSNorm weight
    mixers: tuple  # n_layers Mamba1Block | Mamba2Block
    norm_f: jax.Array  # (d_model,)
    head: jax.Array | None  # (vocab, d_model) of an untied head; None: tied to the embedding
    eps: float = eqx.field(static=True)  # the RMSNorms' epsilon (HF layer_norm_epsilon)

    def __init__(self, embedding, norms, mixers, norm_f, eps: float = 1e-5, head=None):
        self.embedding, self.norms, self.mixers, self.norm_f, self.eps = embedding, norms, tuple(mixers), norm_f, eps
        self.head = head

    @property
    def kind(self) -> Kind:
        return "mamba1" if isinstance(self.mixers[0], Mamba1Block) else "mamba2"

    @property
    def n_layers(self) -> int:
        return len(self.mixers)

    def logits(self, h: jax.Array) -> jax.Array:
        """Logits from the residual stream ``h (L, d_model)``: final norm and the head."""
        return rms_norm(h, self.norm_f, self.eps) @ (self.embedding if self.head is None else self.head).T

    def __call__(self, tokens: jax.Array) -> jax.Array:
        h = self.embedding[tokens]
        for w, mixer in zip(self.norms, self.mixers):
            h = h + mixer(rms_norm(h, w, self.eps))
        return self.logits(h)


def make_lm(kind: Kind, vocab: int, d_model: int, n_layers: int, *, d_state: int = 16, key: jax.Array,
            **mixer_kw) -> MambaLM:
    """A randomly initialised LM: embedding ``N(0, 0.02^2)`` (HF's ``initializer_range``), unit norms,
    each mixer with its own initialisation (``mixer_kw``: the block's keyword arguments, e.g.
    ``headdim``, ``chunk_size`` for Mamba-2, ``rms_bcdt`` for Falcon-Mamba)."""
    if kind not in ("mamba1", "mamba2"):
        raise ValueError(f"kind must be 'mamba1' or 'mamba2', got {kind!r}")
    k_emb, *k_layers = jax.random.split(key, n_layers + 1)
    block = Mamba1Block if kind == "mamba1" else Mamba2Block
    mixers = [block(d_model, d_state, key=k, **mixer_kw) for k in k_layers]
    embedding = 0.02 * jax.random.normal(k_emb, (vocab, d_model), F32)
    return MambaLM(embedding, jnp.ones((n_layers, d_model), F32), mixers, jnp.ones((d_model,), F32))
