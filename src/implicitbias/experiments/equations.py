"""GRPO on equation chains with a small policy trained here: the talk's real-world RL row on a CPU
(docs/science.md, §5 GRPO). The task, reward and test follow the authors' chain-era code
(:mod:`implicitbias.tasks.equations`); the policy, its warm-up and GRPO are
:mod:`implicitbias.tasks.equations_rl`.

One run = per seed: one supervised warm-up (the "before RL" row, evaluated at every complexity), then,
from that same warm-up, GRPO on each training mixture of ``mixtures``; each trained policy is evaluated on
the test layout (the authors' test "14": one chain of 30, 14 steps) and at every complexity of the
per-complexity layout. Mixtures share the warm-up of their seed, so their differences are paired per seed.

Presets: ``full/*`` the talk's mixtures at the authors' sizes; ``mini/*`` ours, the same design at half
the chain length (chains of 8, test one chain of 16 at 7 steps) to fit a CPU session; ``smoke`` seconds.
The learning rate and the warm-up are ours (the authors' 5e-7 is for a pretrained 3B model).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import jax
import numpy as np

from ..core import progress
from ..core.precision import in_float64
from ..core.stats import t_interval
from ..core.validate import described, require, require_seeds
from ..models.policy import PolicyLM
from ..record import Record
from ..tasks import equation_tokens as tk
from ..tasks import equations as eq
from ..tasks import equations_rl as rl

NAME = "equations"
log = logging.getLogger("implicitbias")


def _mini(chain_len: int, lo: int, hi: int) -> eq.Layout:
    return eq.Layout(chain_len=chain_len, min_steps=lo, max_steps=hi, max_label=16)


MINI_MIXTURES: dict[str, eq.Layout] = {
    "1-7": _mini(8, 1, 7), "1-4": _mini(5, 1, 4), "1-2": _mini(3, 1, 2), "7": _mini(8, 7, 7)}
"""Ours: the talk's four mixtures at half size (1-14 -> 1-7, 1-9 -> 1-4, 1-4 -> 1-2, 14 -> 7), each with
chains one longer than its longest derivation as the authors' uniform configs have."""
MINI_TEST = eq.Layout(n_chains=1, chain_len=16, min_steps=7, max_steps=7, max_label=16)
MINI_PER_COMPLEXITY = _mini(8, 1, 7)
FULL_PER_COMPLEXITY = eq.MIXTURES["1-14"]


@dataclass(frozen=True)
class Config:
    """The task family, the policy, its warm-up, GRPO and the evaluation."""

    family: str = described("full", "'full': the talk's mixtures and test 14; 'mini': ours at half size")
    mixtures: tuple[str, ...] = described(("1-14", "1-9", "1-4", "14"), "training mixtures, each from the warm-up")
    d_model: int = described(64, "policy width")
    n_layers: int = described(4, "policy blocks (2 never learned to copy a variable's label in 2,000 warm-up steps)")
    n_heads: int = described(4, "attention heads (d_model / n_heads even)")
    warmup_steps: int = described(6000, "supervised warm-up steps on worked 1-2-step solutions")
    warmup_batch: int = described(32, "warm-up instances per step (every layout in turn)")
    warmup_lr: float = described(3e-3, "warm-up peak learning rate (AdamW, cosine)")
    grpo_steps: int = described(600, "GRPO updates (the authors' 600)")
    prompts: int = described(8, "prompts per update (the authors' 1 x 8 accumulation steps)")
    group: int = described(8, "completions per prompt (the authors' num_generations)")
    lr: float = described(1e-4, "GRPO peak learning rate (ours; theirs 5e-7 for a pretrained 3B model)")
    beta: float = described(1e-4, "KL coefficient to the warm-up model (the authors' beta)")
    temperature: float = described(0.9, "sampling temperature (trl 0.14's default)")
    n_samples: int = described(50_000, "unique training instances per mixture before the 90/10 split")
    n_test: int = described(1000, "test instances (the authors' 1,000)")
    n_per_complexity: int = described(200, "instances per complexity of the per-complexity layout")
    seeds: tuple[int, ...] = described((0, 1, 2), "seeds (warm-up, GRPO, data order)")

    def __post_init__(self):
        require(self.family in ("full", "mini"), f"family must be 'full' or 'mini', got {self.family!r}")
        require_seeds(self.seeds)
        known = self.layouts()
        require(len(self.mixtures) > 0 and all(m in known for m in self.mixtures),
                f"mixtures must be a non-empty subset of {tuple(known)} for family {self.family!r}, "
                f"got {self.mixtures}")
        require(type(self.group) is int and self.group >= 2, f"group must be an integer >= 2, got {self.group!r}")
        for name in ("d_model", "n_layers", "n_heads", "warmup_steps", "warmup_batch", "grpo_steps", "prompts",
                     "n_samples", "n_test", "n_per_complexity"):
            require(type(getattr(self, name)) is int and getattr(self, name) >= 1,
                    f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        require(self.d_model % self.n_heads == 0 and (self.d_model // self.n_heads) % 2 == 0,
                f"d_model {self.d_model} must be n_heads {self.n_heads} x an even head size")
        require(self.lr > 0 and self.warmup_lr > 0 and self.beta >= 0 and self.temperature > 0,
                "learning rates and temperature must be > 0, beta >= 0")

    def layouts(self) -> dict[str, eq.Layout]:
        return eq.MIXTURES if self.family == "full" else MINI_MIXTURES

    def test_layout(self) -> eq.Layout:
        return eq.AUTHORS_TEST if self.family == "full" else MINI_TEST

    def per_complexity_layout(self) -> eq.Layout:
        return FULL_PER_COMPLEXITY if self.family == "full" else MINI_PER_COMPLEXITY

    def warmup_layouts(self) -> tuple[eq.Layout, ...]:
        """Every training layout and the test layout: the warm-up sees every label and prompt size."""
        seen, out = set(), []
        for lay in (*self.layouts().values(), self.test_layout()):
            if (lay.n_chains, lay.chain_len) not in seen:
                seen.add((lay.n_chains, lay.chain_len))
                out.append(lay)
        return tuple(out)

    def max_new(self, steps: int) -> int:
        """Completion budget: a worked solution of ``steps`` steps and 16 tokens of slack."""
        return tk.solution_length(steps) + 16


PRESETS: dict[str, Config] = {
    "full/all": Config(),
    "mini/all": Config(family="mini", mixtures=tuple(MINI_MIXTURES)),
    "smoke": Config(family="mini", mixtures=("1-2", "7"), d_model=16, n_heads=2, n_layers=1, warmup_steps=20,
                    warmup_batch=8, grpo_steps=3, prompts=2, group=2, n_samples=200, n_test=16,
                    n_per_complexity=8, seeds=(0,)),
}


def _evaluate_all(model, vocab, config: Config, seed: int) -> dict:
    test = eq.generate(config.test_layout(), config.n_test, seed=10_000 + seed, unique=False)
    out = {"test": rl.evaluate(model, vocab, test, config.max_new(config.test_layout().max_steps))}
    pc = config.per_complexity_layout()
    out["per_complexity"] = {}
    for d in range(1, pc.max_steps + 1):
        insts = eq.generate(pc.at(d), config.n_per_complexity, seed=20_000 + 100 * seed + d)
        out["per_complexity"][str(d)] = rl.evaluate(model, vocab, insts, config.max_new(d))
    return out


@dataclass(frozen=True)
class StepProgress:
    """A progress report: seed, the phase (``"warm-up"`` or ``"<mixture> GRPO"``), its step, and what the step
    measured (``"loss 0.213"``, ``"reward 1.47"``)."""

    seed: int
    phase: str
    step: int
    steps: int
    measured: str
    seconds: float

    def describe(self) -> str:
        return (f"seed {self.seed} · {self.phase} step {self.step:,}/{self.steps:,} · {self.measured} · "
                f"{progress.rate_and_eta(self.step, self.steps, self.seconds)}")


def run_seed(config: Config, seed: int) -> dict:
    """The warm-up, its evaluation, then GRPO on every mixture from it and their evaluations."""
    vocab = tk.Vocab(max(lay.max_label for lay in config.warmup_layouts()))
    k_model, _ = jax.random.split(jax.random.PRNGKey(seed))
    model = PolicyLM(len(vocab), config.d_model, config.n_layers, config.n_heads, key=k_model)
    t0 = time.perf_counter()

    def on_warm(step, loss):
        progress.report(StepProgress(seed, "warm-up", step, config.warmup_steps, f"loss {loss:.3f}",
                                     time.perf_counter() - t0))

    warm = rl.warm_up(model, vocab, config.warmup_layouts(), steps=config.warmup_steps, batch=config.warmup_batch,
                      lr=config.warmup_lr, seed=seed, on_step=on_warm)
    out = {"seed": seed, "warmup": {"seconds": warm.seconds, "history": warm.history,
                                    **_evaluate_all(warm.model, vocab, config, seed)}, "mixtures": {}}
    settings = dict(steps=config.grpo_steps, prompts=config.prompts, group=config.group, lr=config.lr,
                    beta=config.beta, temperature=config.temperature)
    for name in config.mixtures:
        lay = config.layouts()[name]
        pool = eq.generate(lay, config.n_samples, seed=1000 * seed + 7)
        train_idx, _ = eq.split(len(pool))
        t0 = time.perf_counter()

        def on_step(row, name=name, t0=t0):
            if row["step"] % 10 == 0 or row["step"] == config.grpo_steps:
                progress.report(StepProgress(seed, f"{name} GRPO", row["step"], config.grpo_steps,
                                             f"reward {row['reward']:.2f}", time.perf_counter() - t0))

        trained = rl.train_grpo(warm.model, vocab, [pool[i] for i in train_idx],
                                rl.GRPOSettings(max_new=config.max_new(lay.max_steps), **settings), seed,
                                on_step=on_step)
        ev = _evaluate_all(trained.model, vocab, config, seed)
        out["mixtures"][name] = {"seconds": trained.seconds, "history": trained.history, **ev}
        log.info("equations seed %d %s: test accuracy %.1f%% (warm-up %.1f%%), %.0f s", seed, name,
                 100 * ev["test"]["accuracy"], 100 * out["warmup"]["test"]["accuracy"], trained.seconds)
    return out


def across_seeds(per_seed: list[dict], config: Config) -> dict:
    """Test accuracy per mixture (and the warm-up) with a 95% t interval over seeds, and each mixture's
    paired difference from the first mixture (the same warm-ups)."""
    def acc(m, name):
        return m["warmup"]["test"]["accuracy"] if name == "warmup" else m["mixtures"][name]["test"]["accuracy"]

    out = {}
    for name in ("warmup", *config.mixtures):
        a = np.array([100 * acc(m, name) for m in per_seed])
        mean, half = t_interval(a)
        out[name] = {"test_accuracy": mean, "half_width": half, "per_seed": a.tolist()}
    first = config.mixtures[0]
    for name in config.mixtures[1:]:
        d = np.array([100 * (acc(m, name) - acc(m, first)) for m in per_seed])
        mean, half = t_interval(d)
        out[name][f"minus_{first}"] = {"mean": mean, "half_width": half}
    return out


@in_float64
def run(config: Config) -> Record:
    start = time.perf_counter()
    per_seed = [run_seed(config, s) for s in config.seeds]
    return Record({"seeds": list(config.seeds), "per_seed": per_seed, "across_seeds": across_seeds(per_seed, config),
                   "compute_seconds": time.perf_counter() - start})


def footprint_terms(config: Config) -> dict[str, int]:
    """Memory estimate (:func:`implicitbias.runtime.footprint.check`), float32: the GRPO update's activations for
    one prompt's group (the update accumulates gradients group by group; completions x tokens x layers x
    (12 d_model + heads x tokens), kept for the backward pass) at the longest training prompt, and the
    evaluation's KV cache for the test layout."""
    def tokens(lay: eq.Layout) -> int:
        return tk.prompt_length(lay.n_nodes - lay.n_chains + 1) + config.max_new(lay.max_steps)

    L = max(tokens(lay) for lay in config.layouts().values())
    B = config.group
    per_token = config.n_layers * (12 * config.d_model + config.n_heads * L)
    Lt = tokens(config.test_layout())
    return {"GRPO update activations (one group x tokens x layers)": 4 * B * L * per_token,
            "evaluation KV cache (256 x tokens x layers x 2 d_model)":
                4 * 256 * Lt * config.n_layers * 2 * config.d_model}


def footprint_bytes(config: Config) -> int:
    """The sum of :func:`footprint_terms`."""
    return int(sum(footprint_terms(config).values()))
