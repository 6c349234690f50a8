"""A synthetic subject-relation-attribute recall task and its training, for tiny language models on a CPU
(docs/science.md §6; the laptop path of the Mamba knockout, arXiv 2505.24244).

Facts: ``n_subjects`` subjects, each a distinct sequence of ``subject_len`` tokens drawn from a pool
of ``subject_vocab`` tokens (so a subject is only known from all of its tokens together), and
``n_relations`` relations, each with its own ``template_len`` template tokens. Every (subject,
relation) pair has an attribute drawn uniformly from ``n_attributes`` attribute tokens.

A prompt::

    BOS  s_1 .. s_k  f_1 .. f_g  r_1 .. r_m   ->  attribute

with ``g = gap`` filler tokens drawn afresh for every prompt. The gap must exceed the reach of the
causal convolutions, ``(d_conv - 1) x n_layers`` tokens, or the convolutions alone carry the subject
to the last token and no SSM knockout changes anything (``docs/findings``; checked by
:func:`check_gap`). The subject span is ``(1, 1 + subject_len)``: token 0 (``first``) is BOS.

Training (:func:`train_lm`): AdamW on the cross-entropy of the attribute at the last position, with
label smoothing so that the model's probability of the true attribute stays like a real LM's (0.5-0.9)
rather than saturating at 1, where relative changes read as 0.
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


BOS = 0


@dataclass(frozen=True)
class RecallTask:
    """The facts and the prompt format; ``seed`` draws the subjects and the attributes."""

    n_subjects: int = 200
    subject_len: int = 2
    subject_vocab: int = 40
    n_relations: int = 4
    template_len: int = 3
    n_attributes: int = 24
    n_filler: int = 16
    gap: int = 14
    seed: int = 0

    def __post_init__(self):
        if self.subject_vocab ** self.subject_len < self.n_subjects:
            raise ValueError(f"{self.subject_vocab}^{self.subject_len} subject token sequences cannot name "
                             f"{self.n_subjects} distinct subjects")
        for name in ("n_subjects", "subject_len", "subject_vocab", "n_relations", "template_len", "n_attributes",
                     "n_filler"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gap < 0:
            raise ValueError(f"gap must be >= 0, got {self.gap}")

    # vocabulary: BOS | subject tokens | relation templates | filler | attributes
    @property
    def subject_base(self) -> int:
        return 1

    @property
    def relation_base(self) -> int:
        return 1 + self.subject_vocab

    @property
    def filler_base(self) -> int:
        return self.relation_base + self.n_relations * self.template_len

    @property
    def attribute_base(self) -> int:
        return self.filler_base + self.n_filler

    @property
    def vocab(self) -> int:
        return self.attribute_base + self.n_attributes

    @property
    def length(self) -> int:
        return 1 + self.subject_len + self.gap + self.template_len

    @property
    def subject_span(self) -> tuple[int, int]:
        return 1, 1 + self.subject_len


class Facts(NamedTuple):
    subjects: np.ndarray  # (n_subjects, subject_len) token ids
    attributes: np.ndarray  # (n_subjects, n_relations) token ids


def facts(task: RecallTask) -> Facts:
    """The subjects (distinct token sequences) and each (subject, relation)'s attribute token."""
    rng = np.random.default_rng([task.seed, 0])
    codes = rng.choice(task.subject_vocab ** task.subject_len, task.n_subjects, replace=False)
    digits = np.stack([(codes // task.subject_vocab ** i) % task.subject_vocab for i in range(task.subject_len)], 1)
    attributes = rng.integers(0, task.n_attributes, (task.n_subjects, task.n_relations))
    return Facts(task.subject_base + digits, task.attribute_base + attributes)


def sample_prompts(task: RecallTask, fs: Facts, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``n`` prompts ``(n, length)``, their attribute tokens ``(n,)`` and (subject, relation) ids ``(n, 2)``."""
    k_s, k_r, k_f = jax.random.split(key, 3)
    s = jax.random.randint(k_s, (n,), 0, task.n_subjects)
    r = jax.random.randint(k_r, (n,), 0, task.n_relations)
    filler = task.filler_base + jax.random.randint(k_f, (n, task.gap), 0, task.n_filler)
    template = task.relation_base + r[:, None] * task.template_len + jnp.arange(task.template_len)[None]
    bos = jnp.full((n, 1), BOS)
    tokens = jnp.concatenate([bos, jnp.asarray(fs.subjects)[s], filler, template], axis=1)
    return tokens, jnp.asarray(fs.attributes)[s, r], jnp.stack([s, r], 1)


def check_gap(task: RecallTask, d_conv: int, n_layers: int) -> None:
    """``ValueError`` unless the filler gap exceeds the convolutions' reach ``(d_conv - 1) n_layers``."""
    reach = (d_conv - 1) * n_layers
    if task.gap <= reach:
        raise ValueError(f"gap {task.gap} must exceed the convolutions' reach (d_conv - 1) x n_layers = {reach}")


def last_token_loss(model, tokens: jax.Array, answers: jax.Array, smoothing: float, vocab: int) -> jax.Array:
    """Mean cross-entropy of ``answers`` at the last position, labels smoothed by ``smoothing`` over the vocabulary."""
    logits = jax.vmap(lambda t: model(t)[-1])(tokens)
    labels = optax.smooth_labels(jax.nn.one_hot(answers, vocab), smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, labels))


class TrainResult(NamedTuple):
    model: eqx.Module
    losses: np.ndarray  # (steps,)
    seconds: float


def train_lm(model, task: RecallTask, key: jax.Array, *, steps: int = 2000, batch: int = 128, lr: float = 3e-3,
             weight_decay: float = 0.01, smoothing: float = 0.1, chunk: int = 100, on_chunk=None) -> TrainResult:
    """AdamW (cosine decay to 0 after 5% warm-up) on :func:`last_token_loss`, one fresh batch per step,
    compiled in chunks of ``chunk`` steps (``on_chunk(done, mean loss)`` after each: progress)."""
    fs = facts(task)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), steps)
    opt = optax.adamw(schedule, weight_decay=weight_decay)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    state = opt.init(params)

    @eqx.filter_jit
    def run_chunk(params, state, keys):
        def step(carry, k):
            p, s = carry
            tokens, answers, _ = sample_prompts(task, fs, k, batch)
            loss, g = jax.value_and_grad(
                lambda q: last_token_loss(eqx.combine(q, static), tokens, answers, smoothing, task.vocab))(p)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (params, state), losses = jax.lax.scan(step, (params, state), keys)
        return params, state, losses

    start = time.perf_counter()
    keys = jax.random.split(key, steps)
    losses = []
    for i in range(0, steps, chunk):
        params, state, ls = run_chunk(params, state, keys[i : i + chunk])
        losses.append(np.asarray(ls))
        if on_chunk is not None:
            on_chunk(min(i + chunk, steps), float(losses[-1].mean()))
    return TrainResult(eqx.combine(params, static), np.concatenate(losses), time.perf_counter() - start)


@eqx.filter_jit
def last_probs(model, tokens: jax.Array) -> jax.Array:
    """Next-token probabilities at the last position of every prompt, ``(n, vocab)``; ``tokens (n, L)``."""
    return jax.nn.softmax(jax.vmap(lambda t: model(t)[-1])(tokens), -1)


def quality(probs: jax.Array, answers: jax.Array) -> dict:
    """Accuracy of the top-1, and the median and mean probability of the true attribute (``p_base``),
    from :func:`last_probs` ``(n, vocab)`` and the answers ``(n,)``."""
    probs, answers = np.asarray(probs), np.asarray(answers)
    p = probs[np.arange(len(answers)), answers]
    return {"accuracy": float(np.mean(probs.argmax(-1) == answers)), "p_median": float(np.median(p)),
            "p_mean": float(p.mean()), "n": int(len(answers))}


def evaluate(model, task: RecallTask, key: jax.Array, n: int = 512) -> dict:
    """:func:`quality` on ``n`` fresh prompts."""
    tokens, answers, _ = sample_prompts(task, facts(task), key, n)
    return quality(last_probs(model, tokens), answers)
