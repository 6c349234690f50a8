"""Attention knockout in a selective scan: the authors' ZERO_ATTENTION (docs/science.md §6).

A selective SSM is implicit attention: its output at ``t`` is ``y_t = sum_{s <= t} alpha(t, s) u_s``
(:mod:`.implicit_attention`). Knocking out the edges from a set of *sources* to a set of *targets*
sets ``alpha(t, s) = 0`` for every target ``t`` and source ``s`` (every state; nothing renormalised)
and leaves every other term alone. Without the ``L x L`` matrix: run the scan a second time with the
sources' inputs removed, and read the targets from it (their ``knockout_scan``,
``src/experiments/knockout/mamba/mamba1/helpers/knockout_scan.py``). Untouched, as in theirs: the
causal convolution before the SSM, the ``D`` skip, the gate and the residual stream.

``exempt`` marks channels (Mamba-1) or heads (Mamba-2) that keep their source-to-target terms (the
authors' decay groups, :func:`decay_groups`). Masks are arrays, not static arguments, so that many
(source set, target set, exempt set) variants run as one ``vmap``-ed, compiled call. A
:class:`~implicitbias.models.transformer.TransformerLM` (the authors' transformer baselines) goes to
:func:`.attention_knockout.knockout_transformer_logits`, an attention mask renormalised by the softmax;
it has no exempt sets (decay groups are a notion of the SSM).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..models.lm import MambaLM, rms_norm
from ..models.mamba1 import Mamba1Block, selective_scan
from ..models.mamba2 import ssd_chunked
from ..models.transformer import TransformerLM
from .attention_knockout import knockout_transformer_logits

GROUPS = ("all", "fast", "slow")  # which third of the channels / heads is exempt: none, fastest, slowest


def _drop(sources: jax.Array, exempt: jax.Array | None, width: int) -> jax.Array:
    """``(L, width)`` bool: the inputs whose terms are removed (source rows, non-exempt columns)."""
    keep = jnp.zeros((width,), bool) if exempt is None else exempt
    return sources[:, None] & ~keep[None, :]


def knockout_selective_scan(dA, dBu, C, sources: jax.Array, targets: jax.Array,
                            exempt: jax.Array | None = None) -> jax.Array:
    """:func:`selective_scan` with ``alpha(t, s) = 0`` for ``t`` in ``targets``, ``s`` in ``sources``.

    ``sources, targets (L,)`` bool; ``exempt (d,)`` bool or None (no channel exempt). Returns ``(L, d)``.
    Empty ``sources`` or ``targets`` give the plain scan bit for bit.
    """
    y = selective_scan(dA, dBu, C)
    drop = _drop(sources, exempt, dA.shape[1])
    y_knocked = selective_scan(dA, jnp.where(drop[..., None], 0.0, dBu), C)
    return jnp.where(targets[:, None], y_knocked, y)


def knockout_ssd(x: jax.Array, a: jax.Array, B: jax.Array, C: jax.Array, chunk_size: int, sources: jax.Array,
                 targets: jax.Array, exempt: jax.Array | None = None) -> jax.Array:
    """Mamba-2's SSD scan (:func:`implicitbias.models.mamba2.ssd_chunked`) with ``alpha(t, s) = 0`` for
    ``t`` in ``targets``, ``s`` in ``sources``, on the heads not ``exempt``.

    ``x (L, n_heads, headdim)`` (already multiplied by ``dt``), ``a (L, n_heads)``, ``B, C (L, N)``;
    ``sources, targets (L,)`` bool, ``exempt (n_heads,)`` bool or None. Returns ``(L, n_heads, headdim)``.
    """
    y = ssd_chunked(x, a, B, C, chunk_size)
    drop = _drop(sources, exempt, x.shape[1])
    y_knocked = ssd_chunked(jnp.where(drop[..., None], 0.0, x), a, B, C, chunk_size)
    return jnp.where(targets[:, None, None], y_knocked, y)


def decay_rates(A_log: jax.Array) -> jax.Array:
    """One number per channel or head, larger = slower decay (the authors' ``_get_feature_mask``,
    ``src/experiments/infrastructure/model_interface.py``): Mamba-1 ``A_log (d, N)`` gives
    ``sum_n exp(-exp(A_log[d, n]))`` (the L1 norm over states of the decay at ``delta = 1``);
    Mamba-2 ``A_log (n_heads,)`` gives ``exp(-exp(A_log[h]))``."""
    decay = jnp.exp(-jnp.exp(A_log))
    return decay.sum(-1) if decay.ndim == 2 else decay


def decay_groups(A_log: jax.Array, group: str) -> jax.Array:
    """The exempt mask of a decay group, ``(width,)`` bool (the authors' ``FeatureCategory``):
    ``"all"``: nothing exempt, every channel / head is knocked out; ``"fast"`` (their FAST_DECAY,
    "context-dependent" in their legends): the ``width // 3`` channels with the fastest decay
    (smallest :func:`decay_rates`) are exempt and keep their source-to-target terms; ``"slow"``
    (SLOW_DECAY, "context-independent"): the ``width // 3`` slowest are exempt. Ties are broken by
    position (a stable sort; theirs is ``torch.argsort``, whose tie order is unspecified)."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    rate = decay_rates(A_log)
    width = rate.shape[0]
    exempt = jnp.zeros((width,), bool)
    if group == "all":
        return exempt
    third = width // 3
    order = jnp.argsort(rate if group == "fast" else -rate, stable=True)
    return exempt.at[order[:third]].set(True)


# --- in a language model ------------------------------------------------------------------------


def knockout_mixer(mixer, u: jax.Array, sources: jax.Array, targets: jax.Array,
                   exempt: jax.Array | None = None) -> jax.Array:
    """A Mamba-1 or Mamba-2 mixer's output ``(L, d_model)`` for ``u`` with the knockout of its scan
    (:func:`knockout_selective_scan`, :func:`knockout_ssd`); the conv, ``D``, gate and norm untouched."""
    if isinstance(mixer, Mamba1Block):
        x, delta, A, B, C, z = mixer.ssm_inputs(u)
        y = knockout_selective_scan(*mixer.discretize(x, delta, A, B), C, sources, targets, exempt)
        return mixer.output(y, x, z)
    x, dt, A, B, C, z = mixer.inputs(u)
    y = knockout_ssd(x * dt[..., None], A * dt, B, C, mixer.chunk_size, sources, targets, exempt)
    return mixer.output(y, x, z)


def knockout_logits(lm: MambaLM | TransformerLM, tokens: jax.Array, window: jax.Array, sources: jax.Array,
                    targets: jax.Array, exempt: jax.Array | None = None) -> jax.Array:
    """``lm``'s logits ``(L, vocab)`` with ``alpha(t, s) = 0`` for ``t`` in ``targets``, ``s`` in
    ``sources``, in every layer of ``window``; for a transformer, the attention mask of
    :func:`.attention_knockout.knockout_transformer_logits` instead.

    ``tokens (L,)`` int; ``window (n_layers,)`` bool; ``sources, targets (L,)`` bool; ``exempt``
    ``(n_layers, width)`` bool (channels for Mamba-1, heads for Mamba-2; :func:`exempt_masks`) or None
    (always None for a transformer). Every argument is an array, so ``jax.vmap`` runs many (window,
    source set) variants in one call. An empty window or source set gives ``lm(tokens)`` bit for bit.
    """
    if isinstance(lm, TransformerLM):
        if exempt is not None:
            raise ValueError("exempt sets are decay groups of an SSM's channels or heads; a transformer has none")
        return knockout_transformer_logits(lm, tokens, window, sources, targets)
    h = lm.embedding[tokens]
    for i, (w, mixer) in enumerate(zip(lm.norms, lm.mixers)):
        ex = None if exempt is None else exempt[i]
        h = h + knockout_mixer(mixer, rms_norm(h, w, lm.eps), sources & window[i], targets, ex)
    return lm.logits(h)


def layer_windows(n_layers: int, ws: int) -> jax.Array:
    """Every run of ``ws`` consecutive layers ``[l, l + ws)``, ``l = 0 .. n_layers - ws``, as
    ``(n_layers - ws + 1, n_layers)`` bool (the authors' windows; a curve's x-axis is ``l``)."""
    if not 1 <= ws <= n_layers:
        raise ValueError(f"window size must be in 1..{n_layers}, got {ws}")
    layers = jnp.arange(n_layers)
    starts = jnp.arange(n_layers - ws + 1)[:, None]
    return (layers >= starts) & (layers < starts + ws)


def exempt_masks(lm: MambaLM, group: str) -> jax.Array:
    """``(n_layers, width)`` bool: each layer's :func:`decay_groups` mask for ``group`` (Mamba only)."""
    if isinstance(lm, TransformerLM):
        raise ValueError("decay groups are defined on an SSM's channels or heads; a transformer has none")
    return jnp.stack([decay_groups(m.A_log, group) for m in lm.mixers])


# --- layer by layer (the window sweep that computes the layers before a window once) --------------


def embed(lm, tokens: jax.Array) -> jax.Array:
    """The residual stream entering layer 0, ``(L, d_model)``."""
    return lm.embed(tokens) if isinstance(lm, TransformerLM) else lm.embedding[tokens]


def layer(lm, i: int, h: jax.Array, sources: jax.Array | None = None, targets: jax.Array | None = None,
          exempt: jax.Array | None = None) -> jax.Array:
    """Layer ``i`` on the residual stream ``h (L, d_model)``; with ``sources`` and ``targets`` ``(L,)``
    bool, knocked out (the Mamba scan's ``alpha(t, s) = 0`` on the channels / heads not ``exempt
    (width,)``, or the transformer's attention mask)."""
    L = h.shape[0]
    if isinstance(lm, TransformerLM):
        allowed = jnp.ones((L, L), bool) if sources is None else ~(targets[:, None] & sources[None, :])
        return lm.blocks[i](h, allowed)
    u = rms_norm(h, lm.norms[i], lm.eps)
    if sources is None:
        return h + lm.mixers[i](u)
    return h + knockout_mixer(lm.mixers[i], u, sources, targets, exempt)


def sweep_last_hidden(lm, tokens: jax.Array, ws: int, sources: jax.Array, exempt: jax.Array | None = None,
                      last: jax.Array | int | None = None) -> jax.Array:
    """The final residual stream at the last position, ``(W, S, d_model)``, with the last token's edges
    from each source set ``sources (S, L)`` knocked out in each window ``[l, l + ws)``,
    ``l = 0 .. n_layers - ws`` (:func:`layer_windows`); ``exempt (n_layers, width)`` or None. ``last``:
    the position of the prompt's last token (None: ``L - 1``); the tokens after it are padding, which a
    causal model's earlier positions never see, so prompts of different lengths share one compile.

    The same numbers as :func:`knockout_logits` per (window, source set), computed with less work: the
    layers below a window are the plain model's, run once for all windows, and the layers after it run
    one scan, not two. ``ws`` is static (the structure unrolls, ``sum_l (n_layers - l)`` layer bodies).
    """
    L, n = tokens.shape[0], lm.n_layers
    last = L - 1 if last is None else last
    targets = jnp.arange(L) == last
    plain = [embed(lm, tokens)]
    for i in range(n - ws):  # the inputs of every window's first layer
        plain.append(layer(lm, i, plain[-1]))
    out = []
    for start in range(n - ws + 1):
        def one(src, start=start):
            h = plain[start]
            for i in range(start, n):
                ex = None if exempt is None else exempt[i]
                h = layer(lm, i, h, src, targets, ex) if i < start + ws else layer(lm, i, h)
            return h[last]

        out.append(jax.vmap(one)(sources))
    return jnp.stack(out)
