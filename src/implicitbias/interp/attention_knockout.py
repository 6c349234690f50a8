"""Attention knockout in a transformer: the authors' GPT-2 baseline (docs/science.md §6).

In every layer of a window, the attention of each *target* ``t`` to each *source* ``s`` is masked:
the score ``(t, s)`` becomes ``finfo(dtype).min`` and the softmax renormalises over the remaining keys.
Theirs (``set_block_attn_hooks``, ``src/experiments/knockout/gpt/gpt2/gpt2_knockout_utils.py``) wraps
the attention of each layer of the window and hands it the additive mask ``(1 - M) * finfo.min``
with ``M = tril(1)`` and ``M[t, s] = 0`` for each (target, source) pair; the other layers run plainly.
The MLPs, the residual stream and every other (query, key) pair are untouched. Unlike the Mamba
knockout (:mod:`.knockout`), the remaining weights are renormalised: nothing is set to 0 after the
softmax.

A target row with every causal key knocked out: every score of it is ``finfo.min`` (the addition
absorbs the score), so the softmax is uniform. Here, as under Hugging Face's eager GPT-2 attention
(which also puts ``finfo.min`` on the future keys and adds theirs, overflowing to ``-inf``), it is
uniform over ``0..t`` (:func:`implicitbias.models.transformer.masked_scores`). Under SDPA, the default
attention of their pinned ``transformers`` for GPT-2, their mask is the only causal mask and the row
would be uniform over all ``L`` keys, the future included; the two agree on the last row, the only
target in their experiments.

Same argument convention as :func:`.knockout.knockout_logits`: masks are arrays, so many variants
run as one ``vmap``-ed call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..models.transformer import TransformerLM


def allowed_masks(window: jax.Array, sources: jax.Array, targets: jax.Array) -> jax.Array:
    """``(n_layers, L, L)`` bool: ``False`` at ``(t, s)`` for ``t`` in ``targets`` and ``s`` in
    ``sources`` in the layers of ``window (n_layers,)``, ``True`` elsewhere (causality is applied on top)."""
    knocked = targets[:, None] & sources[None, :]
    return ~(window[:, None, None] & knocked[None])


def knockout_transformer_logits(lm: TransformerLM, tokens: jax.Array, window: jax.Array, sources: jax.Array,
                                targets: jax.Array) -> jax.Array:
    """``lm``'s logits ``(L, vocab)`` with the attention of ``targets`` to ``sources`` masked in every
    layer of ``window``.

    ``tokens (L,)`` int; ``window (n_layers,)`` bool; ``sources, targets (L,)`` bool. An empty window,
    source set or target set gives ``lm(tokens)`` bit for bit (the same code path, every key allowed).
    """
    return lm.forward(tokens, allowed_masks(window, sources, targets))


def attention_weights(lm: TransformerLM, tokens: jax.Array, layer: int, allowed: jax.Array | None = None) -> jax.Array:
    """Layer ``layer``'s attention weights ``(n_heads, L, L)`` (query, key) on ``tokens (L,)``, with
    ``allowed (L, L)`` bool masking that layer (None: nothing masked); the layers below run plainly."""
    L = tokens.shape[0]
    every = jnp.ones((L, L), bool)
    h = lm.embed(tokens)
    for block in lm.blocks[:layer]:
        h = block(h, every)
    return lm.blocks[layer].attention_weights(h, every if allowed is None else allowed)
