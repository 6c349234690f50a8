"""The small policy on the equation-chain task (docs/science.md, §5 GRPO): its supervised warm-up on worked 1-2-step
solutions, GRPO on a training mixture (:mod:`implicitbias.tasks.grpo`, the authors' trl 0.14 settings where
they carry over), and the authors' evaluation (greedy decoding, accuracy of the extracted answer, the
"efficient" share: correct answers whose completion names no variable off the derivation path).

Batches hold one layout at a time (:class:`~implicitbias.tasks.equations.Layout`): every prompt of a
layout has the same number of tokens (:mod:`implicitbias.tasks.equation_tokens`), so nothing is padded
and each layout compiles once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import equation_tokens as tk
from . import equations as eq
from . import grpo


_sample = eqx.filter_jit(grpo.sample)  # one wrapper for the module: its compilations are kept across calls


def encode(vocab: tk.Vocab, insts: list[eq.Instance]) -> np.ndarray:
    """Prompts ``(n, Lp)`` of instances of one layout."""
    rows = [tk.encode_prompt(vocab, i) for i in insts]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("instances of different layouts in one batch")
    return np.stack(rows)


def solutions(vocab: tk.Vocab, insts: list[eq.Instance], length: int) -> np.ndarray:
    """Worked solutions ``(n, length)``, right-padded with ``<pad>``."""
    out = np.full((len(insts), length), vocab.pad, np.int32)
    for row, inst in zip(out, insts):
        s = tk.solution(vocab, inst)
        if len(s) > length:
            raise ValueError(f"a {inst.steps}-step solution has {len(s)} tokens > {length}")
        row[: len(s)] = s
    return out


def sft_loss(model, prompts: jax.Array, targets: jax.Array, eos: int) -> jax.Array:
    """Mean over solutions of the mean cross-entropy of their tokens through the first ``<eos>``."""
    logp = jax.vmap(lambda p, c: grpo.token_logprobs(model, p, c))(prompts, targets)
    mask = grpo.completion_mask(targets, eos)
    return -jnp.mean((logp * mask).sum(-1) / mask.sum(-1))


class TrainLog(NamedTuple):
    model: eqx.Module
    history: list[dict]
    seconds: float


def _adamw(lr: float, steps: int, warmup: float, weight_decay: float, clip: float):
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, round(warmup * steps)), max(steps, 2))
    return optax.chain(optax.clip_by_global_norm(clip), optax.adamw(sched, weight_decay=weight_decay))


def warm_up(model, vocab: tk.Vocab, layouts: tuple[eq.Layout, ...], *, steps: int, batch: int, lr: float,
            seed: int, max_steps: int = 2, on_step=None) -> TrainLog:
    """Supervised warm-up: step ``i`` draws ``batch`` fresh instances of ``layouts[i % len(layouts)]`` with
    1..``max_steps`` steps and fits their worked solutions (AdamW, 5% warm-up, cosine, clip 1)."""
    opt = _adamw(lr, steps, 0.05, 0.0, 1.0)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    state = opt.init(params)

    @eqx.filter_jit
    def update(params, state, prompts, targets):
        loss, g = jax.value_and_grad(lambda p: sft_loss(eqx.combine(p, static), prompts, targets, vocab.eos))(params)
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state, loss

    rng = np.random.default_rng(seed)
    length = tk.solution_length(max_steps)
    hist, start = [], time.perf_counter()
    for i in range(steps):
        lay = layouts[i % len(layouts)]
        lay = eq.Layout(lay.n_chains, lay.chain_len, 1, min(max_steps, lay.chain_len - 1), lay.max_label)
        insts = [eq.sample(lay, rng) for _ in range(batch)]
        params, state, loss = update(params, state, jnp.asarray(encode(vocab, insts)),
                                     jnp.asarray(solutions(vocab, insts, length)))
        if (i + 1) % 50 == 0 or i + 1 == steps:
            hist.append({"step": i + 1, "loss": float(loss)})
            if on_step is not None:
                on_step(i + 1, float(loss))
    return TrainLog(eqx.combine(params, static), hist, time.perf_counter() - start)


@dataclass(frozen=True)
class GRPOSettings:
    """GRPO's knobs (the authors' trl 0.14 values where a small policy can use them; docs/science.md, §5 GRPO)."""

    steps: int = 600
    prompts: int = 8  # prompts per update (theirs: 1 per device x 8 accumulation steps)
    group: int = 8  # completions per prompt (num_generations)
    lr: float = 5e-7
    warmup: float = 0.03
    beta: float = 1e-4
    temperature: float = 0.9  # trl 0.14's GRPOConfig default
    max_new: int = 138  # tokens per completion
    clip: float = 1.0  # the HF Trainer's max_grad_norm
    weight_decay: float = 0.0  # the HF Trainer's default


def rewards(vocab: tk.Vocab, completions: np.ndarray, insts: list[eq.Instance]) -> tuple[np.ndarray, np.ndarray]:
    """The authors' two rewards, format and answer (0 or 1 each), of each decoded completion ``(n, T)``;
    the reward GRPO uses is their sum."""
    texts = [tk.decode(vocab, c) for c in completions]
    return (np.array([eq.format_reward(t) for t in texts]),
            np.array([eq.answer_reward(t, inst.answer) for t, inst in zip(texts, insts)]))


def accumulated_gradient(params, static, ref_lp, prompts, comps, mask, adv, beta: float, n_groups: int):
    """The gradient of :func:`~implicitbias.tasks.grpo.grpo_loss` over a batch of ``n_groups`` equal groups
    (rows ``[i G, (i + 1) G)``), one group at a time with the gradients averaged (the authors' accumulation
    steps of one prompt each): the whole batch's gradient, with one group's activations alive at a time.
    Returns ``(grad, loss, kl)``."""
    def one(carry, xs):
        g_sum, loss_sum, kl_sum = carry
        (loss, parts), g = jax.value_and_grad(
            lambda p: grpo.grpo_loss(eqx.combine(p, static), *xs, beta), has_aux=True)(params)
        return (jax.tree.map(jnp.add, g_sum, g), loss_sum + loss, kl_sum + parts["kl"]), None

    def groups(x):
        return x.reshape(n_groups, x.shape[0] // n_groups, *x.shape[1:])

    zero = jax.tree.map(jnp.zeros_like, params)
    xs = tuple(groups(x) for x in (ref_lp, prompts, comps, mask, adv))
    (g, loss, kl), _ = jax.lax.scan(one, (zero, 0.0, 0.0), xs)
    return jax.tree.map(lambda a: a / n_groups, g), loss / n_groups, kl / n_groups


def train_grpo(model, vocab: tk.Vocab, train: list[eq.Instance], settings: GRPOSettings, seed: int,
               on_step=None) -> TrainLog:
    """GRPO from ``model`` (also the frozen reference), on ``train`` (one layout) taken in a seeded random
    order, ``settings.prompts`` prompts and ``settings.group`` completions each per update."""
    s = settings
    opt = _adamw(s.lr, s.steps, s.warmup, s.weight_decay, s.clip)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    ref = model
    state = opt.init(params)

    @eqx.filter_jit
    def ref_logp(prompts, comps):
        return jax.vmap(lambda p, c: grpo.token_logprobs(ref, p, c))(prompts, comps)

    @eqx.filter_jit
    def update(params, state, prompts, comps, mask, adv, ref_lp):
        g, loss, kl = accumulated_gradient(params, static, ref_lp, prompts, comps, mask, adv, s.beta, s.prompts)
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state, loss, kl

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    key = jax.random.PRNGKey(seed)
    hist, start = [], time.perf_counter()
    for i in range(s.steps):
        idx = [order[(i * s.prompts + j) % len(train)] for j in range(s.prompts)]
        insts = [train[j] for j in idx for _ in range(s.group)]
        prompts = jnp.asarray(encode(vocab, insts))
        key, k = jax.random.split(key)
        comps = _sample(eqx.combine(params, static), prompts, k, s.max_new, s.temperature, vocab.eos, vocab.pad)
        fmt, ans = rewards(vocab, np.asarray(comps), insts)
        r = fmt + ans
        adv = grpo.group_advantages(r.reshape(s.prompts, s.group)).reshape(-1)
        mask = grpo.completion_mask(comps, vocab.eos)
        params, state, loss, kl = update(params, state, prompts, comps, mask, jnp.asarray(adv, jnp.float32),
                                         ref_logp(prompts, comps))
        row = {"step": i + 1, "reward": float(r.mean()), "format": float(fmt.mean()), "answer": float(ans.mean()),
               "loss": float(loss), "kl": float(kl), "seconds": time.perf_counter() - start}
        hist.append(row)
        if on_step is not None:
            on_step(row)
    return TrainLog(eqx.combine(params, static), hist, time.perf_counter() - start)


def evaluate(model, vocab: tk.Vocab, insts: list[eq.Instance], max_new: int, batch: int = 256) -> dict:
    """Greedy decoding (the authors' test): accuracy (the extracted answer equals the target), the share in
    the authors' format, and the "efficient" share of the correct answers (no variable named off the
    derivation path), over ``insts`` of one layout."""
    correct = fmt = efficient = 0
    for b in range(0, len(insts), batch):
        chunk = insts[b : b + batch]
        comps = np.asarray(_sample(model, jnp.asarray(encode(vocab, chunk)), jax.random.PRNGKey(0), max_new, 0.0,
                                   vocab.eos, vocab.pad))
        for c, inst in zip(comps, chunk):
            text = tk.decode(vocab, c)
            ok = eq.extract_answer(text) == str(inst.answer)
            correct += ok
            fmt += eq.format_reward(text) == 1
            off = {e.lhs for e in inst.equations} | {e.rhs for e in inst.equations if e.rhs is not None}
            off -= set(inst.path)
            efficient += ok and not (tk.mentioned(text) & off)
    n = len(insts)
    return {"accuracy": correct / n, "format": fmt / n, "efficient_rate": efficient / correct if correct else 0.0,
            "correct": int(correct), "n": n}
