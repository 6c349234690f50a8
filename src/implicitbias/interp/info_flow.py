"""Information flow by knockout: the authors' positions, windows and metric (docs/science.md §6;
their ``runners/info_flow.py``, ``runners/heatmap.py`` and ``Prompt.get_knockout_idx``).

* **Positions** (:func:`positions`): ``first`` = token 0, ``last`` = token ``L-1``, ``subject`` = the
  subject string's tokens, ``relation`` = every non-subject token (the last one included),
  ``context`` = the tokens before the subject.
* **Windows**: every run of ``ws`` consecutive layers (:func:`implicitbias.interp.knockout.layer_windows`).
* **Metric** (:func:`relative_change`): per prompt and window, ``100 (p_knock - p_base) / p_base``
  with ``p`` the probability, at the last position, of the first token of the true target; the mean
  over prompts with a 95% Student-t interval, and whether the true token stays top-1
  (:func:`summarize`).
* **Heatmap** (:func:`heatmap`): for one prompt, the edge ``(last, s)`` knocked out for each single
  source token ``s`` and each window: ``p_knock - p_base``.

Every (window, source set) variant of a prompt runs in one compiled, ``vmap``-ed call
(:func:`knockout_last_probs`; :func:`sweep_last_probs` computes the layers below each window once and the
head at the last position only: the same numbers to float32 rounding, less work, used by :func:`flow`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..core.stats import t_interval
from ..models.lm import MambaLM
from .knockout import knockout_logits, sweep_last_hidden

POSITIONS = ("first", "last", "subject", "relation", "context")


def positions(n_tokens: int, subject: tuple[int, int]) -> dict[str, np.ndarray]:
    """The authors' source sets for a prompt of ``n_tokens`` tokens whose subject is the tokens
    ``subject[0] .. subject[1] - 1``: name -> ``(n_tokens,)`` bool."""
    start, stop = subject
    if not 0 <= start < stop <= n_tokens:
        raise ValueError(f"subject span {subject} must lie within 0..{n_tokens}")
    idx = np.arange(n_tokens)
    in_subject = (idx >= start) & (idx < stop)
    return {"first": idx == 0, "last": idx == n_tokens - 1, "subject": in_subject, "relation": ~in_subject,
            "context": idx < start}


@eqx.filter_jit
def knockout_last_probs(lm: MambaLM, tokens: jax.Array, windows: jax.Array, sources: jax.Array,
                        exempt: jax.Array | None = None) -> jax.Array:
    """Next-token probabilities at the last position, ``(W, S, vocab)``, for every window ``(W, n_layers)``
    and source set ``(S, L)``, with the last token the only target; ``exempt (n_layers, width)`` or None."""
    L = tokens.shape[0]
    targets = jnp.arange(L) == L - 1

    def one(window, source):
        return jax.nn.softmax(knockout_logits(lm, tokens, window, source, targets, exempt)[-1])

    return jax.vmap(lambda w: jax.vmap(lambda s: one(w, s))(sources))(windows)


@eqx.filter_jit
def sweep_last_probs(lm, tokens: jax.Array, ws: int, sources: jax.Array, exempt: jax.Array | None = None,
                     last: jax.Array | int | None = None) -> jax.Array:
    """:func:`knockout_last_probs` for the windows ``layer_windows(n_layers, ws)``, ``(W, S, vocab)``, with
    the layers below each window computed once and the head applied to the last position only
    (:func:`implicitbias.interp.knockout.sweep_last_hidden`; ``last``: the prompt's last position when
    the tokens after it are padding). ``ws`` is static: one compile per size and padded length."""
    h = sweep_last_hidden(lm, tokens, ws, sources, exempt, last)
    return jax.nn.softmax(lm.logits(h), axis=-1)


@eqx.filter_jit
def last_probs(lm: MambaLM, tokens: jax.Array, last: jax.Array | int | None = None) -> jax.Array:
    """The plain model's next-token probabilities at the last position (or at ``last``, the tokens
    after it padding), ``(vocab,)``."""
    return jax.nn.softmax(lm(tokens)[-1 if last is None else last])


def relative_change(p_knock, p_base):
    """``100 (p_knock - p_base) / p_base`` (percent)."""
    return 100.0 * (np.asarray(p_knock) - np.asarray(p_base)) / np.asarray(p_base)


def summarize(changes: np.ndarray, kept_top1: np.ndarray, level: float = 0.95) -> dict:
    """Per window: the mean relative change over prompts with its Student-t half-width, and the share
    of prompts whose true token stays top-1. ``changes, kept_top1 (prompts, W)``."""
    changes, kept = np.asarray(changes, float), np.asarray(kept_top1, bool)
    mean, half = zip(*(t_interval(changes[:, w], level) for w in range(changes.shape[1])))
    return {"mean": list(mean), "half_width": list(half), "kept_top1": kept.mean(0).tolist(),
            "prompts": int(changes.shape[0])}


@eqx.filter_jit
def _group_probs(lm, tokens: jax.Array, ws: int, sources: jax.Array, exempts: jax.Array, last=None) -> jax.Array:
    """:func:`sweep_last_probs` for every exempt mask of ``exempts (G, n_layers, width)``: ``(G, W, S, vocab)``."""
    return jax.vmap(lambda e: sweep_last_probs(lm, tokens, ws, sources, e, last))(exempts)


def flow(lm, tokens: jax.Array, answers: jax.Array, ws: int, sources: jax.Array,
         exempt: jax.Array | None = None, lasts=None) -> tuple[np.ndarray, np.ndarray]:
    """Every prompt's relative change of its true token and whether it stays top-1, for every window of
    ``ws`` layers (:func:`implicitbias.interp.knockout.layer_windows`) and source set: ``(changes, kept)``,
    each ``(P, W, S)``; with ``exempt (G, n_layers, width)`` (a stack of decay groups' masks,
    :func:`implicitbias.interp.knockout.exempt_masks`) each ``(P, G, W, S)``. ``tokens (P, L)``,
    ``answers (P,)``, ``sources (S, L)`` bool; ``exempt (n_layers, width)`` or None for one group. One
    compiled call per prompt holds all its variants (:func:`sweep_last_probs`). ``lasts (P,)``: each
    prompt's last position when the rows are right-padded (None: ``L - 1``)."""
    changes, kept = [], []
    lasts = [None] * len(answers) if lasts is None else [jnp.asarray(x) for x in np.asarray(lasts)]
    for t, a, last in zip(tokens, np.asarray(answers), lasts):
        if exempt is not None and exempt.ndim == 3:
            p = np.asarray(_group_probs(lm, t, ws, sources, exempt, last))
        else:
            p = np.asarray(sweep_last_probs(lm, t, ws, sources, exempt, last))
        base = np.asarray(last_probs(lm, t, last))[a]
        changes.append(relative_change(p[..., a], base))
        kept.append(p.argmax(-1) == a)
    return np.stack(changes), np.stack(kept)


def heatmap(lm, tokens: jax.Array, target_token: int, ws: int, exempt: jax.Array | None = None) -> np.ndarray:
    """``p_knock - p_base`` of ``target_token`` at the last position, ``(W, L)``: the edge
    ``(last, s)`` knocked out for each single source ``s`` in each window of ``ws`` layers."""
    L = tokens.shape[0]
    singles = jnp.eye(L, dtype=bool)
    p = sweep_last_probs(lm, tokens, ws, singles, exempt)[..., target_token]
    return np.asarray(p - last_probs(lm, tokens)[target_token])
