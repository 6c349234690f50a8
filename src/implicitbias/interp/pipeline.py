"""The paper's pipeline on a real checkpoint (docs/science.md §6; the authors' ``runners/evaluate_model``,
``info_flow`` and ``heatmap``): evaluate every CounterFact prompt (``p_base`` and the rank of the true
target's first token at the last position), keep the prompts answered correctly (by one model, or by
every model of a list), sweep the knockout over windows, source sets and decay groups, and draw one
prompt's heatmap. Prompts are encoded by :func:`implicitbias.tasks.counterfact.encode`; the model is
any LM that :func:`implicitbias.interp.knockout.knockout_logits` accepts. Results are plain dicts,
JSON-ready (the ``implicitbias knockout`` commands write them).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..tasks.counterfact import evaluate_target
from . import info_flow as fl
from ..models.transformer import TransformerLM
from .knockout import exempt_masks, layer_windows

FLOW_SOURCES = ("subject", "relation", "last", "first")  # the authors' info-flow sources; target: last
PAD_TO = 8  # prompts are right-padded to a multiple of this: one compile per padded length, not per length


def padded(tokens, pad_to: int = PAD_TO) -> tuple[np.ndarray, int]:
    """``tokens (L,)`` right-padded with token 0 to a multiple of ``pad_to``, and ``L - 1`` (the last
    real position). Exact for a causal model: no position before the padding sees it."""
    tokens = np.asarray(tokens)
    n = -(-len(tokens) // pad_to) * pad_to
    return np.concatenate([tokens, np.zeros(n - len(tokens), tokens.dtype)]), len(tokens) - 1


def evaluate(lm, prompts, on_prompt=None) -> list[dict]:
    """Per encoded prompt (``tokens (L,)``, ``subject``, ``target``): ``p_base``, ``rank`` (1 = top-1) and
    ``correct`` of the target token at the last position, the authors' rule
    (:func:`implicitbias.tasks.counterfact.evaluate_target`), and the top-1 token."""
    out = []
    for p in prompts:
        tokens, last = padded(p.tokens)
        probs = np.asarray(fl.last_probs(lm, jnp.asarray(tokens), jnp.asarray(last)))
        e = evaluate_target(probs, p.target)
        out.append({"p_base": e.p_base, "rank": e.rank, "correct": e.correct, "top1": int(probs.argmax())})
        if on_prompt is not None:
            on_prompt(len(out), len(prompts))
    return out


def keep_correct(*evaluations: list[dict]) -> list[int]:
    """Indices of the prompts that every evaluation (one per model, same data) answers correctly."""
    if not evaluations:
        raise ValueError("give at least one evaluation")
    n = {len(e) for e in evaluations}
    if len(n) != 1:
        raise ValueError(f"the evaluations cover different numbers of prompts: {sorted(n)}")
    return [i for i in range(n.pop()) if all(e[i]["correct"] for e in evaluations)]


def info_flow(lm, prompts, ws: int = 9, sources: tuple[str, ...] = FLOW_SOURCES,
              groups: tuple[str, ...] = ("all",), on_prompt=None) -> dict:
    """Per decay group and source set: the relative change of the true target's probability at the last
    position, per window ``[l, l + ws)``, mean over ``prompts`` with a 95% t interval and the share kept
    top-1 (:func:`implicitbias.interp.info_flow.summarize`). Prompts are right-padded (:func:`padded`): one
    compile per padded length.
    ``on_prompt(done, total)`` after each prompt of each group (progress)."""
    if not prompts:
        raise ValueError("no prompts to knock out (did the filter keep none?)")
    windows = layer_windows(lm.n_layers, ws)
    out = {"ws": ws, "windows": int(windows.shape[0]), "prompts": len(prompts), "groups": {}}
    # every decay group in one compiled call per prompt ('all' = nothing exempt), p_base once per prompt
    exempt = None if isinstance(lm, TransformerLM) else jnp.stack([exempt_masks(lm, g) for g in groups])
    if exempt is None and tuple(groups) != ("all",):
        raise ValueError(f"a transformer has no decay groups; run groups ('all',), not {tuple(groups)}")
    changes, kept = [], []
    for i, p in enumerate(prompts):
        tokens, last = padded(p.tokens)
        masks = fl.positions(len(p.tokens), tuple(p.subject))
        src = np.zeros((len(sources), len(tokens)), bool)
        src[:, : len(p.tokens)] = np.stack([masks[s] for s in sources])  # the padding is no source
        ch, k = fl.flow(lm, jnp.asarray(tokens)[None], np.array([p.target]), ws, jnp.asarray(src), exempt,
                        lasts=[last])
        changes.append(ch[0] if exempt is not None else ch[0][None])  # (G, W, S)
        kept.append(k[0] if exempt is not None else k[0][None])
        if on_prompt is not None:
            on_prompt(i + 1, len(prompts))
    changes, kept = np.stack(changes), np.stack(kept)  # (P, G, W, S)
    for j, group in enumerate(groups):
        out["groups"][group] = {s: fl.summarize(changes[:, j, :, i], kept[:, j, :, i]) for i, s in enumerate(sources)}
    return out


def heatmap(lm, prompt, ws: int = 9) -> dict:
    """One prompt: ``p_knock - p_base`` of its target for the edge (last, s), each token ``s`` and each
    window, ``(W, L)`` (:func:`implicitbias.interp.info_flow.heatmap`)."""
    h = fl.heatmap(lm, jnp.asarray(prompt.tokens), int(prompt.target), ws)
    return {"ws": ws, "delta": h.tolist(), "tokens": [int(t) for t in prompt.tokens]}
