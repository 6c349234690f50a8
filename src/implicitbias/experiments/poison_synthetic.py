"""The gradient-matching attack validated on a known case: Table 1's teacher-student SSM.

The real-world attack (:mod:`implicitbias.poison.matching`, ``assemble``, ``retrain``) run against a
beyond-Theorem cell of Table 1 (``cell``), where the theory says what a successful clean-label poison
looks like: mass on the last positions. The science, the targets (long-horizon impulses) and the
controls (same-norm random perturbations, spread or at the end; the theory's special sequences as a
reference) are in :mod:`implicitbias.poison.synthetic`; this module holds the presets and ``run``.

Metrics per variant (``clean``, ``matched``, ``matched_pen<p>``, ``random_uniform``, ``random_end``,
``special``): per-seed lists of the extrapolation error, target loss, train loss, whether the run fit
the clean run's train loss, and (perturbations) the energy share at the end and the matching loss
at the clean student; summaries: the mean error, the runs that fit, and the geometric-mean ratio
to the clean error over the seeds whose poisoned run fit. Arrays: each perturbation ``delta``
``(seed, n_poisons, L)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..core.precision import in_float64
from ..core.optim import Optimizer
from ..core.validate import described, require, require_choices
from ..poison import synthetic
from ..record import Record
from ..tasks import teacher_student
from . import table1

NAME = "poison_synthetic"
__all__ = ["NAME", "Config", "PRESETS", "run"]


@dataclass(frozen=True)
class Config:
    """One synthetic validation of the attack: the victim cell, the brew's budget and the retraining."""

    cell: str = described(
        "beyond_theorem/L6", "the victim: a beyond_theorem table1 preset without /special (teacher d* = 1)")
    seeds: tuple[int, ...] = described((), "victim seeds (non-negative integers); empty = the cell's own")
    eps: float = described(1.0, "l-inf budget of a perturbation (baseline entries are N(0,1): 1 = one std)")
    n_poisons: int = described(8, "number of perturbed baseline sequences (1..the cell's n_baseline)")
    iterations: int = described(250, "brew: sign-Adam steps per restart")
    restarts: int = described(8, "brew: random restarts; the lowest matching loss is kept")
    lr: float = described(0.1, "brew: step size in units of eps (each entry moves about lr eps per step)")
    penalties: tuple[float, ...] = described(
        (0.0, 1.0), "one matched variant per weight of the penalty on energy away from the end (>= 0)")
    penalty_power: float = described(1.0, "the penalty's weight at position i: (1 - i/(L-1))^power")
    horizon: int = described(40, "targets: unit impulses of this length read h_{L+1} .. h_horizon (> L)")
    last_frac: float = described(1 / 3, "the end of a sequence: its last ceil(last_frac L) positions, in (0, 1]")
    mode: Literal["duplicate", "replace"] = described(
        "duplicate", "duplicate: the clean set plus the perturbed copies; replace: the copies replace their rows")
    max_rounds: int = described(3, "extra 'train until the clean loss' rounds for a poisoned run (>= 0)")
    extra_round_steps: int = described(200_000, "cap on the updates of one extra round (>= 1)")
    log_every: int = described(100, "log the training every this many updates")
    train_optimizer: Literal["", Optimizer] = described(
        "", "the victim's optimiser; empty = the cell's (Table 1's adaptive-rate GD)")
    train_lr: float = described(0.0, "the victim's learning rate; 0 = the cell's")
    fit_floor: float = described(
        1e-6, "a poisoned run fits at train loss <= max(the clean run's, fit_floor) (Adam reaches round-off)")

    def __post_init__(self):
        require_choices(self)
        require(self.cell in table1.PRESETS and not self.cell.endswith("/special"),
                f"cell must be a table1 preset without /special, got {self.cell!r}")
        require(all(type(s) is int and s >= 0 for s in self.seeds),
                f"seeds must be non-negative integers, got {self.seeds}")
        require(self.iterations >= 1 and self.restarts >= 1, "iterations and restarts must be >= 1")
        require(self.max_rounds >= 0 and self.extra_round_steps >= 1 and self.log_every >= 1,
                "max_rounds must be >= 0, extra_round_steps and log_every >= 1")
        for name in ("eps", "lr", "penalty_power", "train_lr", "fit_floor"):
            v = getattr(self, name)
            require(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0,
                    f"{name} must be a finite number >= 0, got {v!r}")
        self.synthetic()  # the science's own checks (beyond_theorem cell, budgets, horizon)

    def synthetic(self) -> synthetic.SyntheticConfig:
        """The science's config: this validation on the table1 preset ``cell``."""
        return synthetic.SyntheticConfig(
            task=table1.PRESETS[self.cell], seeds=self.seeds, eps=self.eps, n_poisons=self.n_poisons,
            iterations=self.iterations, restarts=self.restarts, lr=self.lr, penalties=self.penalties,
            penalty_power=self.penalty_power, horizon=self.horizon, last_frac=self.last_frac, mode=self.mode,
            max_rounds=self.max_rounds, extra_round_steps=self.extra_round_steps, log_every=self.log_every,
            train_optimizer=self.train_optimizer, train_lr=self.train_lr, fit_floor=self.fit_floor)


PRESETS: dict[str, Config] = {
    # benchmarks/bench_poison_synthetic.py's defaults: the cell's 4 seeds, no penalty and penalty 1
    "beyond_theorem/L6": Config(),
    "beyond_theorem/L6/replace": Config(mode="replace"),
    "beyond_theorem/L10": Config(cell="beyond_theorem/L10"),
}


def summary(per_seed: list[dict], variants: tuple[str, ...]) -> dict:
    """Per variant: per-seed lists and the summaries of the module docstring (``<variant>_<metric>``)."""
    clean = np.array([r["clean"]["error"] for r in per_seed])
    out: dict = {}
    for name in ("clean",) + variants:
        rows = [r[name] for r in per_seed]
        errs = np.array([v["error"] for v in rows])
        fits = np.array([v["fits"] for v in rows], bool)
        for key in ("error", "target_loss", "train_loss", "fits", "rounds", "steps", "energy_share",
                    "matching_loss", "linf", "l2"):
            if key in rows[0]:
                out[f"{name}_{key}"] = [v[key] for v in rows]
        out[f"{name}_mean_error"] = float(errs.mean())
        out[f"{name}_runs_that_fit"] = int(fits.sum())
        out[f"{name}_ratio_to_clean"] = (float(np.exp(np.mean(np.log(errs[fits] / clean[fits]))))
                                         if fits.any() else None)
    return out


@in_float64
def run(config: Config) -> Record:
    """Every seed of the validation (:func:`implicitbias.poison.synthetic.run_seed`), summarised."""
    start = time.perf_counter()
    cfg = config.synthetic()
    result = synthetic.run(cfg)
    variants = cfg.variant_names()
    per_seed = result["per_seed"]
    metrics = {"seeds": result["seeds"], "L": cfg.task_config.L, "uniform_share": result["uniform_share"],
               **summary(per_seed, variants),
               "clean_train_seconds": [r["times"]["clean_train_s"] for r in per_seed],
               "brew_seconds": [r["times"]["brew_s"] for r in per_seed],
               "compute_seconds": time.perf_counter() - start}
    arrays = {f"delta_{name}": np.stack([r["deltas"][name] for r in per_seed])
              for name in per_seed[0]["deltas"]}
    return Record(metrics, arrays)


def footprint_terms(config: Config) -> dict[str, int]:
    """Memory estimate (:func:`implicitbias.runtime.footprint.check`): one victim training at a time
    (the cell's terms for one seed), and the brew's restarts of ``(n_poisons, L)`` perturbations
    with their Adam moments and gradients."""
    task = config.synthetic().task_config
    one = teacher_student.footprint_terms(type(task)(**{**task.__dict__, "seeds": task.seeds[:1]}))
    brew = 4 * config.restarts * config.n_poisons * task.L * 8
    return {**one, f"brew perturbations, moments and gradients x {config.restarts} restarts": brew}


def footprint_bytes(config: Config) -> int:
    """The sum of :func:`footprint_terms`."""
    return int(sum(footprint_terms(config).values()))
