"""Validation of the attack on a known case: the teacher-student SSM of Table 1.

The same gradient-matching attack used on real classifiers (:mod:`.matching`, :mod:`.assemble`,
:mod:`.retrain`) is run against the *beyond-Theorem* setting of docs/science.md §2b, where the theory says what
a successful clean-label poison looks like (a *special* sequence: mass on the last positions).

Setting (``SyntheticConfig.task``, e.g. Table 1's ``beyond_theorem/L6``): teacher ``d* = 1``,
``a* = B* = C* = 1`` (``h*_k = 1``); student ``DiagonalSSM`` with ``d = 10``; 8 baseline sequences
with N(0,1) entries at positions ``0:2``, labelled by the teacher; regression loss
``mean((y_L(u) - y*)^2)``; training = full-batch GD with the adaptive learning rate until
``L_train <= 0.01``, then 1,500 more steps (exactly Table 1's training).

Targets (long-horizon extrapolation). Length-``H`` unit impulses (``H = horizon = 40``) at positions
``0..H-L-1``: the impulse at position ``j`` makes ``y_H = h_{H-j}``, so the targets read
``h_{L+1} .. h_H`` with true labels ``h*_k = 1``, and the target loss is
``mean_{k=L+1..H} (h_k - 1)^2``. Why: extrapolation *beyond the training length* is the
generalisation the theory is about (the training inputs of length ``L`` never see ``h_k`` for
``k > L``), and these are the entries where any ``|a_i| > 1`` explodes the error. Inputs of length
``L`` would only read ``h_1..h_L``, of which the baseline data pin ``h_{L-1}, h_L`` anyway.
The attack is untargeted: ``D = -grad_theta(target loss)`` at the clean-trained student.

Poisons. Copies of the first ``n_poisons`` baseline sequences, perturbed by ``delta`` with
``||delta||_inf <= eps`` on the **whole** sequence (every position may move; nothing steers the
energy to the end unless ``penalty > 0``). Their labels are the **clean teacher labels of the
perturbed inputs**, ``y = teacher(x + delta)``, recomputed inside the matching objective (so
``g_p(delta)`` is the gradient the victim will actually see) and in the poisoned set. This is
essential: with the original labels ``teacher(x)`` the poisons would be *mislabelled* and any
effect would be label noise, not clean-label poisoning.

Variants, each retrained from the **same** initialisation as the clean run, in ``mode`` (default
duplicate: clean set + perturbed copies), until its train loss is at most the clean run's
(extra rounds of "train until that loss", capped; losses below ``fit_floor = 1e-6`` count as a fit,
since Adam drives the MSE to round-off):

* ``matched``: the gradient-matching perturbation (one per entry of ``penalties``);
* ``random_uniform``: per poison, a uniformly random direction (``U[-1,1]^L``) rescaled to the
  matched perturbation's ℓ2 norm (same energy, spread over the sequence);
* ``random_end``: the same, but supported only on the last ``ceil(last_frac L)`` positions
  (same energy, special-like placement; may exceed ``eps`` in ℓ∞ since it keeps the ℓ2 norm);
* ``special``: the theory's attack, ``n_poisons`` special sequences (N(0,1) at position ``L-2``)
  with teacher labels appended instead of perturbed copies (a reference, not budget-matched).

Measured per seed: extrapolation error ``max_{k<=40} |h_k - h*_k| / max |h*_k|``
(:func:`metrics.extrapolation_error`), target loss, train loss and fit, the share of the
perturbation's energy in the last ``ceil(last_frac L)`` positions, and the matching loss ``M`` of
each perturbation at the clean student (how well it aligns with the target direction).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, replace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..core import metrics, sequences
from ..core.optim import StopRule, make_optimizer
from ..tasks import teacher_student as ts
from ..core.train import train
from .assemble import assemble
from .controls import same_norm_random
from .matching import BrewConfig, craft_poisons, energy_share, matching_loss, target_direction
from .retrain import retrain

VARIANTS_FIXED = ("random_uniform", "random_end", "special")


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic validation of the attack; see the module docstring."""

    task: ts.Config  # the victim's cell: beyond_theorem, no special sequences (e.g. table1's beyond_theorem/L6)
    seeds: tuple[int, ...] = ()  # default: the task's seeds
    eps: float = 1.0  # ℓ∞ budget; baseline entries are N(0,1), so 1.0 is "one standard deviation"
    n_poisons: int = 8
    iterations: int = 250
    restarts: int = 8
    lr: float = 0.1
    penalties: tuple[float, ...] = (0.0,)  # one matched variant per end-of-sequence penalty weight
    penalty_power: float = 1.0
    horizon: int = 40
    last_frac: float = 1 / 3
    mode: str = "duplicate"
    max_rounds: int = 3  # extra "train until the clean loss" rounds for a poisoned run
    extra_round_steps: int = 200_000  # cap on the steps of one extra round
    log_every: int = 100
    train_optimizer: str = ""  # victim's optimizer; "" = the preset's (adaptive-lr GD)
    train_lr: float = 0.0  # victim's learning rate; 0 = the preset's
    fit_floor: float = 1e-6  # a poisoned run "fits" at train loss <= max(clean train loss, fit_floor)

    def __post_init__(self):
        if self.task.setting != "beyond_theorem" or self.task.special:
            raise ValueError("task must be a beyond_theorem config without special sequences, got "
                             f"{self.task.setting} with special={self.task.special}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        n_base = self.task.n_baseline
        if not 1 <= self.n_poisons <= n_base:
            raise ValueError(f"n_poisons must be in 1..{n_base}, got {self.n_poisons}")
        if any(p < 0 for p in self.penalties) or not self.penalties:
            raise ValueError(f"penalties must be non-empty and >= 0, got {self.penalties}")
        if self.horizon <= self.task.L:
            raise ValueError(f"horizon must exceed L, got {self.horizon}")
        if not 0 < self.last_frac <= 1:
            raise ValueError(f"last_frac must be in (0, 1], got {self.last_frac}")

    @property
    def task_config(self) -> ts.Config:
        """The victim's config: ``task`` with this validation's seeds, horizon, logging and optimizer."""
        base = self.task
        return replace(base, seeds=self.seeds or base.seeds, horizon=self.horizon, log_every=self.log_every,
                       optimizer=self.train_optimizer or base.optimizer, lr=self.train_lr or base.lr)

    def variant_names(self) -> tuple[str, ...]:
        return tuple(matched_name(p) for p in self.penalties) + VARIANTS_FIXED


def matched_name(penalty: float) -> str:
    return "matched" if penalty == 0 else f"matched_pen{penalty:g}"


def mse(model, x, y) -> jax.Array:
    """The regression loss of Table 1, ``mean((model(x) - y)^2)``, as ``loss_fn(model, x, y)``."""
    return jnp.mean((model(x) - y) ** 2)


@functools.cache
def _compiled_train(optimizer: str, lr: float, rule: StopRule, log_every: int):
    opt = make_optimizer(optimizer, lr)
    loss = lambda m, d: mse(m, d["X"], d["y"])
    log = lambda m, d: {"loss": loss(m, d)}

    @eqx.filter_jit
    def run(model, X, y):
        return train(loss, model, {"X": X, "y": y}, opt, rule, log_every, log)

    return run


def make_train_fn(tc: ts.Config, rule: StopRule | None = None):
    """``train_fn(model, x, y, key) -> (model, history)`` running Table 1's training (``key`` unused:
    full-batch GD is deterministic)."""
    rule = rule or StopRule(tc.eps, tc.extra_steps, tc.max_steps)
    run = _compiled_train(tc.optimizer, tc.lr, rule, tc.log_every)

    def train_fn(model, x, y, key):
        del key
        res = run(model, x, y)
        hist = {"steps": int(res.steps), "hit_step": int(res.hit_step), "diverged": bool(res.diverged),
                "final_loss": float(res.final_loss)}
        return res.params, hist

    return train_fn


def extrapolation_targets(L: int, horizon: int, dtype=jnp.float64) -> jax.Array:
    """Length-``horizon`` unit impulses at positions ``0..horizon-L-1``: they read ``h_horizon .. h_{L+1}``."""
    return jnp.eye(horizon, dtype=dtype)[: horizon - L]


def run_seed(cfg: SyntheticConfig, seed: int) -> dict:
    """Clean run, brew(s), controls and retraining for one seed. Returns a dict of floats and arrays."""
    tc = cfg.task_config
    keys = ts.task_keys(seed)
    tch = ts.teacher(tc)
    X = ts.training_inputs(tc, seed)
    y = tch(X)
    init = ts.ssm_init(tc, keys["init"])
    train_fn = make_train_fn(tc)
    train_key = jax.random.PRNGKey(seed)
    h_star = tch.impulse_response(cfg.horizon)
    X_t = extrapolation_targets(tc.L, cfg.horizon)
    y_t = tch(X_t)

    def measure(model):
        return {"error": float(metrics.extrapolation_error(model.impulse_response(cfg.horizon), h_star)),
                "target_loss": float(mse(model, X_t, y_t))}

    t0 = time.perf_counter()
    clean = retrain(init, X, y, train_fn, train_key, mse)
    out = {"clean": {**measure(clean.model), "train_loss": clean.train_loss, "fits": True, "rounds": 0,
                     "steps": clean.histories[0]["steps"]}}
    t_train = time.perf_counter() - t0
    fit_target = max(clean.train_loss, cfg.fit_floor)  # Adam drives MSE to ~1e-20: compare above round-off
    cont_fn = make_train_fn(tc, StopRule(fit_target, 0, cfg.extra_round_steps))

    direction = target_direction(mse, clean.model, X_t, y_t, "untargeted")
    idx = np.arange(cfg.n_poisons)
    x_p = X[idx]
    n_last = max(1, math.ceil(cfg.last_frac * tc.L - 1e-9))
    brew_key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    ctrl_key = jax.random.fold_in(jax.random.PRNGKey(seed), 2)

    deltas, brews = {}, {}
    t0 = time.perf_counter()
    for pen in cfg.penalties:
        bc = BrewConfig(eps=cfg.eps, iterations=cfg.iterations, restarts=cfg.restarts, lr=cfg.lr,
                        penalty=pen, penalty_power=cfg.penalty_power)
        res = craft_poisons(clean.model, mse, x_p, y[idx], direction, brew_key, bc, label_fn=tch)
        deltas[matched_name(pen)] = res.delta
        brews[matched_name(pen)] = res
    t_brew = time.perf_counter() - t0
    ref = deltas[matched_name(cfg.penalties[0])]
    ku, ke, ks = jax.random.split(ctrl_key, 3)
    deltas["random_uniform"] = same_norm_random(ku, ref)
    deltas["random_end"] = same_norm_random(ke, ref, slice(tc.L - n_last, tc.L))

    for name, delta in deltas.items():
        ps = assemble(X, y, idx, delta, cfg.mode, label_fn=tch)
        r = retrain(init, ps.x, ps.y, train_fn, train_key, mse, target_loss=fit_target,
                    continue_fn=cont_fn, max_rounds=cfg.max_rounds)
        m = float(matching_loss(delta, clean.model, mse, x_p, tch(x_p + delta), direction, label_fn=tch))
        out[name] = {**measure(r.model), "train_loss": r.train_loss, "fits": r.fits, "rounds": r.rounds,
                     "steps": sum(h["steps"] for h in r.histories),
                     "energy_share": energy_share(delta, cfg.last_frac), "matching_loss": m,
                     "linf": float(jnp.max(jnp.abs(delta))), "l2": float(jnp.linalg.norm(delta))}
        if name in brews:
            out[name]["brew_objective"] = float(brews[name].objective)
    # the theory's attack as a reference: special sequences with teacher labels appended
    S = sequences.special_sequences(ks, cfg.n_poisons, tc.L, tc.positions)
    Xs, ys = jnp.concatenate([X, S]), jnp.concatenate([y, tch(S)])
    r = retrain(init, Xs, ys, train_fn, train_key, mse, target_loss=fit_target,
                continue_fn=cont_fn, max_rounds=cfg.max_rounds)
    out["special"] = {**measure(r.model), "train_loss": r.train_loss, "fits": r.fits, "rounds": r.rounds,
                      "steps": sum(h["steps"] for h in r.histories)}
    out["times"] = {"clean_train_s": t_train, "brew_s": t_brew}
    out["deltas"] = {k: np.asarray(v) for k, v in deltas.items()}
    return out


def run(cfg: SyntheticConfig) -> dict:
    """Every seed of ``cfg``: ``{'seeds': [...], 'per_seed': [run_seed(...)], 'wall_seconds': ...}``."""
    start = time.perf_counter()
    seeds = list(cfg.task_config.seeds)
    per_seed = [run_seed(cfg, s) for s in seeds]
    return {"seeds": seeds, "per_seed": per_seed, "wall_seconds": time.perf_counter() - start,
            "uniform_share": math.ceil(cfg.last_frac * cfg.task_config.L - 1e-9) / cfg.task_config.L}


def table(result: dict, cfg: SyntheticConfig) -> str:
    """A Markdown table: per seed and variant, extrapolation error, target loss, fit, energy share, M."""
    tc = cfg.task_config
    lines = [
        f"Synthetic validation (beyond_theorem/L{tc.L}, victim {tc.optimizer} lr={tc.lr:g}, eps={cfg.eps:g}, "
        f"{cfg.n_poisons} poisons, mode={cfg.mode}, "
        f"horizon={cfg.horizon}, energy share = last {math.ceil(cfg.last_frac * cfg.task_config.L - 1e-9)} "
        f"of {cfg.task_config.L} positions; uniform = {result['uniform_share']:.3f})",
        "",
        "| seed | variant | extrap. error | target loss | train loss | fits (rounds) | energy share end | M at clean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for seed, rec in zip(result["seeds"], result["per_seed"]):
        for name in ("clean",) + cfg.variant_names():
            v = rec[name]
            share = v.get("energy_share")
            mm = v.get("matching_loss")
            lines.append(
                f"| {seed} | {name} | {v['error']:.4g} | {v['target_loss']:.4g} | {v['train_loss']:.3g} | "
                f"{'yes' if v['fits'] else 'NO'} ({v['rounds']}) | {'-' if share is None else f'{share:.3f}'} | "
                f"{'-' if mm is None else f'{mm:.3f}'} |"
            )
    lines += [
        "",
        "Summary over seeds. Errors of runs that did not fit their training set (train loss above the "
        "clean run's after the capped extra rounds) are not comparable; 'fitting' columns use only runs that fit.",
        "",
        "| variant | runs that fit | mean extrap. error (all) | geo-mean ratio to clean (fitting) | "
        "fitting seeds above clean | mean energy share end | mean M at clean |",
        "|---|---|---|---|---|---|---|",
    ]
    clean = np.array([r["clean"]["error"] for r in result["per_seed"]])
    for name in ("clean",) + cfg.variant_names():
        errs = np.array([r[name]["error"] for r in result["per_seed"]])
        fits = np.array([r[name]["fits"] for r in result["per_seed"]], bool)
        shares = [r[name].get("energy_share") for r in result["per_seed"]]
        ms = [r[name].get("matching_loss") for r in result["per_seed"]]
        share = "-" if shares[0] is None else f"{np.mean(shares):.3f}"
        mm = "-" if ms[0] is None else f"{np.mean(ms):.3f}"
        ratio = f"{float(np.exp(np.mean(np.log(errs[fits] / clean[fits])))):.3g}" if fits.any() else "-"
        lines.append(
            f"| {name} | {int(fits.sum())}/{fits.size} | {errs.mean():.4g} | {ratio} | "
            f"{int((errs[fits] > clean[fits]).sum())}/{int(fits.sum())} | {share} | {mm} |"
        )
    return "\n".join(lines)
