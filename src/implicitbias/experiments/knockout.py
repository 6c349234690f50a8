"""Mamba knockout on tiny language models trained here: how the subject's fact reaches the last token
in Mamba-1, Mamba-2 and a transformer (docs/science.md §6; Endy et al., ACL 2025, arXiv 2505.24244,
the authors' code ``nirendy/mamba-knockout``).

The laptop path of the paper's experiment: a model of each architecture is trained on the synthetic
subject-relation-attribute recall task (:mod:`implicitbias.tasks.factual_recall`), prompts it answers
correctly are kept (the authors keep the prompts whose top-1 is the true target), and the authors'
knockout (:mod:`implicitbias.interp.knockout`; the transformer's attention mask,
:mod:`implicitbias.interp.attention_knockout`) is swept over every window of ``ws`` consecutive layers
and every source set, with the last token the target (:mod:`implicitbias.interp.info_flow`). Per seed
it measures the mean relative change ``100 (p_knock - p_base) / p_base`` of the true attribute with a
95% Student-t interval over prompts and the share of prompts whose top-1 survives; across seeds the
per-seed means are summarised apart (replication seeds, never pooled). The real-checkpoint path
(a local Hugging Face directory and a CounterFact file) is the ``implicitbias knockout`` command.

Presets: ``tiny/<kind>`` (2 layers, seconds: the tests), and ``paper/<kind>``: 8 layers, the paper's
figure types (info flow per source, window-size ablation, decay groups, one heatmap) at a depth where
the middle-to-late question can be asked; ``ws = 3`` of 8 layers stands for the paper's 9 of 24.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..core import progress
from ..core.precision import in_float64
from ..core.stats import t_interval
from ..core.validate import described, require, require_choices, require_seeds
from ..interp import info_flow as fl
from ..interp.knockout import exempt_masks
from ..models.lm import make_lm
from ..models.transformer import make_transformer
from ..record import Record
from ..tasks import factual_recall as fr

NAME = "knockout"
log = logging.getLogger("implicitbias")
SOURCES = ("subject", "relation", "last", "first", "filler")  # the authors' four, then the filler gap (ours)
Kind = Literal["mamba1", "mamba2", "transformer"]


@dataclass(frozen=True)
class Config:
    """One architecture, its training on the recall task, and the knockout sweep."""

    kind: Kind = described("mamba2", "architecture: 'mamba1', 'mamba2' or 'transformer' (GPT-2-style, pre-LN)")
    n_layers: int = described(8, "residual blocks (>= 1)")
    d_model: int = described(64, "width of the residual stream")
    d_state: int = described(16, "SSM state size N (Mamba-1: per channel; Mamba-2: shared by the heads)")
    expand: int = described(2, "Mamba inner width d_inner = expand x d_model")
    d_conv: int = described(4, "Mamba causal convolution width (its reach is d_conv - 1 tokens per layer)")
    headdim: int = described(16, "Mamba-2 head width (n_heads = d_inner / headdim)")
    chunk_size: int = described(16, "Mamba-2 SSD chunk length")
    n_heads: int = described(4, "transformer attention heads")
    n_subjects: int = described(200, "subjects, each a distinct sequence of subject_len tokens")
    subject_len: int = described(2, "tokens per subject")
    subject_vocab: int = described(40, "pool of subject tokens")
    n_relations: int = described(4, "relations, each with its own template tokens")
    template_len: int = described(3, "tokens per relation template (the last is the prompt's last token)")
    n_attributes: int = described(24, "attribute tokens (the answers)")
    n_filler: int = described(16, "filler tokens drawn for the gap")
    gap: int = described(26, "filler tokens between subject and template; must exceed (d_conv - 1) x n_layers "
                             "for a Mamba, or the convolutions alone carry the subject")
    task_seed: int = described(0, "seed of the facts (subjects and attributes)")
    steps: int = described(2000, "AdamW steps, one fresh batch each")
    batch: int = described(128, "prompts per step")
    lr: float = described(3e-3, "peak learning rate (5% warm-up, cosine decay to 0)")
    weight_decay: float = described(0.01, "AdamW weight decay")
    smoothing: float = described(0.1, "label smoothing of the last-token loss (keeps p_base like a real LM's)")
    n_eval: int = described(512, "fresh prompts for accuracy and p_base")
    n_prompts: int = described(64, "knockout prompts: the first n_prompts of the n_eval prompts answered correctly")
    ws: int = described(3, "the standard window size (info flow per source, decay groups, heatmap)")
    window_sizes: tuple[int, ...] = described((1, 3, 5), "window sizes of the ablation (subject -> last)")
    sources: tuple[str, ...] = described(SOURCES, f"source sets, target the last token; any of {SOURCES}")
    groups: tuple[str, ...] = described(
        ("all", "fast", "slow"), "Mamba decay groups: 'all' (nothing exempt), 'fast' / 'slow' (the fastest / "
                                 "slowest third of channels or heads exempt); a transformer runs 'all' only")
    seeds: tuple[int, ...] = described((0, 1, 2), "model seeds (initialisation, training batches, prompts)")

    def __post_init__(self):
        require_choices(self)
        require_seeds(self.seeds)
        for name in ("n_layers", "d_model", "d_state", "expand", "d_conv", "headdim", "chunk_size", "n_heads",
                     "steps", "batch", "n_eval", "n_prompts"):
            require(type(getattr(self, name)) is int and getattr(self, name) >= 1,
                    f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        require(0.0 <= self.smoothing < 1.0, f"smoothing must be in [0, 1), got {self.smoothing}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        for ws in (self.ws, *self.window_sizes):
            require(type(ws) is int and 1 <= ws <= self.n_layers,
                    f"window sizes must be integers in 1..n_layers = {self.n_layers}, got {ws!r}")
        require(len(self.sources) > 0 and all(s in SOURCES for s in self.sources),
                f"sources must be a non-empty subset of {SOURCES}, got {self.sources}")
        require(len(self.groups) > 0 and all(g in ("all", "fast", "slow") for g in self.groups),
                f"groups must be a non-empty subset of ('all', 'fast', 'slow'), got {self.groups}")
        if self.kind == "mamba2":
            require(self.expand * self.d_model % self.headdim == 0,
                    f"expand x d_model = {self.expand * self.d_model} must be a multiple of headdim {self.headdim}")
        if self.kind == "transformer":
            require(self.d_model % self.n_heads == 0,
                    f"d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        self.task()  # its own checks (distinct subjects, sizes)
        if self.kind != "transformer":
            fr.check_gap(self.task(), self.d_conv, self.n_layers)

    def task(self) -> fr.RecallTask:
        return fr.RecallTask(self.n_subjects, self.subject_len, self.subject_vocab, self.n_relations,
                             self.template_len, self.n_attributes, self.n_filler, self.gap, self.task_seed)

    def run_groups(self) -> tuple[str, ...]:
        """The decay groups run: ``groups``, or ``("all",)`` for a transformer (no decay to group by)."""
        return ("all",) if self.kind == "transformer" else self.groups


_TINY = dict(n_layers=2, d_model=16, d_state=4, headdim=8, chunk_size=8, n_heads=2, n_subjects=8, subject_vocab=4,
             n_relations=2, n_attributes=6, n_filler=4, gap=7, steps=300, batch=64, lr=1e-2, n_eval=128,
             n_prompts=8, ws=1, window_sizes=(1, 2), seeds=(0,))

PRESETS: dict[str, Config] = {
    **{f"tiny/{k}": Config(kind=k, **_TINY) for k in ("mamba1", "mamba2", "transformer")},
    "paper/mamba1": Config(kind="mamba1", d_model=32, d_state=8),
    "paper/mamba2": Config(kind="mamba2"),
    "paper/transformer": Config(kind="transformer", d_model=48),
    # 4 layers, gap 13 (> 3 x 4), prompts of 19 tokens: the setup in which a prototype's 4-layer Mamba-2 learned
    # the 800 facts in 2,000 steps; the 8-layer Mamba-2 above stayed at the attributes' marginal (findings)
    "L4/mamba1": Config(kind="mamba1", n_layers=4, d_model=64, d_state=8, gap=13, ws=2, window_sizes=(1, 2, 3)),
    "L4/mamba2": Config(kind="mamba2", n_layers=4, gap=13, ws=2, window_sizes=(1, 2, 3)),
    "L4/transformer": Config(kind="transformer", n_layers=4, d_model=48, gap=13, ws=2, window_sizes=(1, 2, 3)),
}
"""``tiny/*``: 2 layers, 16 facts, a few seconds each (the tests). ``paper/*``: 8 layers, 800 facts,
a gap of 26 (> 3 x 8) filler tokens; ``L4/*``: 4 layers, the same facts, a gap of 13. Widths chosen for
comparable parameter counts (the metrics' ``parameters``) and a CPU budget (docs/findings/knockout.md)."""


def make_model(config: Config, vocab: int, key: jax.Array):
    """A randomly initialised LM of ``config.kind`` for a vocabulary of ``vocab`` tokens."""
    if config.kind == "transformer":
        return make_transformer(vocab, config.d_model, config.n_layers, config.n_heads, config.task().length, key=key)
    kw = dict(expand=config.expand, d_conv=config.d_conv)
    if config.kind == "mamba2":
        kw.update(headdim=config.headdim, chunk_size=config.chunk_size)
    return make_lm(config.kind, vocab, config.d_model, config.n_layers, d_state=config.d_state, key=key, **kw)


def source_masks(task: fr.RecallTask, names: tuple[str, ...]) -> np.ndarray:
    """``(len(names), length)`` bool: the authors' positions (:func:`implicitbias.interp.info_flow.positions`)
    of a recall prompt, and ``filler``: the gap's tokens."""
    pos = fl.positions(task.length, task.subject_span)
    start = task.subject_span[1]
    idx = np.arange(task.length)
    pos["filler"] = (idx >= start) & (idx < start + task.gap)
    return np.stack([pos[n] for n in names])


def _count(tree) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))))


def _summaries(changes: np.ndarray, kept: np.ndarray) -> list[dict]:
    """Per source: :func:`implicitbias.interp.info_flow.summarize` over prompts. ``changes, kept (P, W, S)``."""
    return [fl.summarize(changes[:, :, s], kept[:, :, s]) for s in range(changes.shape[2])]


def run_seed(config: Config, seed: int, on_chunk=None) -> tuple[dict, dict]:
    """Train one model, evaluate it on ``n_eval`` fresh prompts, keep the first ``n_prompts`` of them that it
    answers correctly (the authors evaluate, then filter), sweep the knockouts: ``(metrics, arrays)``."""
    task = config.task()
    k_init, k_train, k_eval = jax.random.split(jax.random.PRNGKey(seed), 3)
    model = make_model(config, task.vocab, k_init)
    trained = fr.train_lm(model, task, k_train, steps=config.steps, batch=config.batch, lr=config.lr,
                          weight_decay=config.weight_decay, smoothing=config.smoothing,
                          chunk=min(100, config.steps), on_chunk=on_chunk)
    lm = trained.model
    tokens, answers, _ = fr.sample_prompts(task, fr.facts(task), k_eval, config.n_eval)
    probs = fr.last_probs(lm, tokens)
    quality = fr.quality(probs, answers)
    correct = np.flatnonzero(np.asarray(probs.argmax(-1) == answers))[: config.n_prompts]
    tokens, answers = tokens[correct], answers[correct]
    out = {"parameters": _count(lm), "train_seconds": trained.seconds,
           "final_loss": float(trained.losses[-min(50, config.steps):].mean()), **quality,
           "prompts_correct": int(len(correct))}
    arrays = {"losses": trained.losses, "prompts": np.asarray(tokens), "answers": np.asarray(answers)}
    if len(correct) == 0:
        return out, arrays
    start = time.perf_counter()
    sources = jnp.asarray(source_masks(task, config.sources))
    groups = config.run_groups()
    if config.kind == "transformer":
        ch, kept = fl.flow(lm, tokens, answers, config.ws, sources)
        ch, kept = ch[:, None], kept[:, None]
    else:  # every decay group in one call ('all' = nothing exempt)
        ch, kept = fl.flow(lm, tokens, answers, config.ws, sources, jnp.stack([exempt_masks(lm, g) for g in groups]))
    flow = {g: dict(zip(config.sources, _summaries(ch[:, i], kept[:, i]))) for i, g in enumerate(groups)}
    arrays["change"] = ch  # (prompts, groups, windows, sources)
    subject = jnp.asarray(source_masks(task, ("subject",)))
    ablation = {}
    for ws in config.window_sizes:
        c, k = fl.flow(lm, tokens, answers, ws, subject)
        ablation[str(ws)] = _summaries(c, k)[0]
    arrays["heatmap"] = fl.heatmap(lm, tokens[0], int(answers[0]), config.ws)  # (windows, L), the first kept prompt
    out.update(flow=flow, ablation=ablation, knockout_seconds=time.perf_counter() - start)
    return out, arrays


def across_seeds(per_seed: list[dict], config: Config) -> dict:
    """Per group, source and window: the mean over seeds of the per-seed means with a 95% t interval
    over seeds (``None`` where a seed kept no prompt)."""
    done = [m for m in per_seed if "flow" in m]
    out: dict = {}
    for group in config.run_groups():
        out[group] = {}
        for s in config.sources:
            means = np.array([m["flow"][group][s]["mean"] for m in done], float)
            stats = [t_interval(means[:, w]) for w in range(means.shape[1])] if len(done) else []
            out[group][s] = {"mean": [a for a, _ in stats], "half_width": [b for _, b in stats], "seeds": len(done)}
    return out


@dataclass(frozen=True)
class TrainingProgress:
    """A progress report (:mod:`implicitbias.core.progress`): seed ``i`` of ``n`` at ``step`` of ``steps``."""

    seed: int
    i: int
    n: int
    step: int
    steps: int
    loss: float
    seconds: float

    def describe(self) -> str:
        return (f"seed {self.seed} ({self.i + 1}/{self.n}) · step {self.step:,}/{self.steps:,} · loss {self.loss:.3f}"
                f" · {progress.rate_and_eta(self.step, self.steps, self.seconds)}")


@in_float64
def run(config: Config) -> Record:
    """Every seed: :func:`run_seed` (progress reported per 100 steps, a log line per seed); then
    :func:`across_seeds`."""
    start = time.perf_counter()
    per_seed, arrays = [], {}
    for i, seed in enumerate(config.seeds):
        t0 = time.perf_counter()

        def on_chunk(step, loss, seed=seed, i=i, t0=t0):
            progress.report(TrainingProgress(seed, i, len(config.seeds), step, config.steps, loss,
                                             time.perf_counter() - t0))

        m, a = run_seed(config, seed, on_chunk=on_chunk)
        log.info("knockout %s seed %d (%d/%d): accuracy %.1f%%, %d prompts kept, %.0f s", config.kind, seed, i + 1,
                 len(config.seeds), 100 * m["accuracy"], m["prompts_correct"], time.perf_counter() - t0)
        per_seed.append({"seed": seed, **m})
        for k, v in a.items():
            arrays[f"seed{seed}_{k}"] = np.asarray(v)
    metrics = {"seeds": list(config.seeds), "per_seed": per_seed, "across_seeds": across_seeds(per_seed, config),
               "windows": {str(ws): int(config.n_layers - ws + 1) for ws in (config.ws, *config.window_sizes)},
               "compute_seconds": time.perf_counter() - start}
    return Record(metrics, arrays)


def footprint_terms(config: Config) -> dict[str, int]:
    """Memory estimate (:func:`implicitbias.runtime.footprint.check`), float32: the training batch's scan
    inputs kept for the backward pass (Mamba-1: ``(batch, L, d_inner, N)`` per layer; Mamba-2 and the
    transformer: ``(batch, L, d_inner)`` / ``(batch, heads, L, L)``), and one prompt's knockout sweep,
    every (window, source) variant's scan inputs at once."""
    task = config.task()
    L, inner = task.length, config.expand * config.d_model
    per_token = {"mamba1": inner * config.d_state, "mamba2": inner + 2 * config.d_state,
                 "transformer": config.n_heads * L + 4 * config.d_model}[config.kind]
    variants = (config.n_layers - min(config.ws, *config.window_sizes) + 1) * max(len(config.sources), 1)
    return {"training activations (batch x L x layers)": 4 * config.batch * L * per_token * config.n_layers,
            "knockout sweep (variants x L, two scans)": 2 * 4 * variants * L * per_token}


def footprint_bytes(config: Config) -> int:
    """The sum of :func:`footprint_terms`."""
    return int(sum(footprint_terms(config).values()))
