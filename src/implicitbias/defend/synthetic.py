"""Defenses on Table 1's teacher-student cells (docs/science.md §1-2, §5 "Defenses").

For every seed of a cell with special sequences: train on the clean set (baseline rows only) and on
the poisoned set (baseline + special rows), from the same initialisation and with Table 1's
training (:mod:`implicitbias.tasks.teacher_student`); score every training example with each
detector (:mod:`.detectors`); remove what the detector's flag rule flags (:mod:`.detection`; the rule
never knows how many examples are special) and retrain from the same initialisation; do the same on
the clean set (the cost of defending when nothing was poisoned). Training-time defenses
(:mod:`.training`: per-example clipping with noise, circular time shifts) train on both sets.

Every training set of a seed is the poisoned set's rows with a 0/1 weight per row: a removed row is
set to zero, and a zero row adds nothing to the loss, its gradient or ``gamma`` (the loss divides
by the number of kept rows), exactly as Table 1 pads its cells. So the clean set here is Table 1's
cell without special sequences, a detector that removes exactly the special rows gives back the
clean run itself, and all runs of one cell batch through one compiled program (``jax.vmap``;
identical sets are trained once).

Per-Theorem cells (gradient flow) follow the same path with :mod:`implicitbias.core.flow`; every run is
integrated to the cell's ``t_final`` (the clean cell's 1e11 at L=7: the poisoned run reads the same
error there as at Table 1's 1e4 to 4 digits, see docs/findings/defense.md), and the training-time
defenses are not run (the flow takes no noise, and the per-Theorem teacher is not shift-invariant).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np

from ..core import flow
from ..core.optim import runtime_lr_optimizer
from ..core.ssm import DiagonalSSM, FullKernelSSM
from ..tasks import teacher_student as ts
from ..core.train import train_batched
from . import detectors as det
from .detection import flag, record_detection
from .training import DPOptimizer, Noisy, circular_shifts, clipped_loss

THEORY = ("nongreedy_share", "energy_tail", "gamma0")
INFLUENCE = ("influence_init", "influence_rank_init", "influence_tracin")
BASELINES = ("loss", "grad_norm", "input_norm", "spectral", "clustering", "random")
DETECTORS = THEORY + INFLUENCE + BASELINES
# the flag rule of each detector: scores that are shares in [0, 1] have a scale of their own
# (flag > 1/2: most of the example's weight is where the theory says poisons put it); the others
# are split at their largest gap; activation clustering keeps its own size rule
RULES = {"nongreedy_share": "threshold", "energy_tail": "threshold", "clustering": "own"}
TRAINING_DEFENSES = ("dp", "shift")


@dataclass(frozen=True)
class Options:
    """What the defender does (the attack is in the task config and ``special_noise``)."""

    detectors: tuple[str, ...] = DETECTORS
    share_threshold: float = 0.05  # chosen on seeds 0-15, replicated on 16-31 (docs/findings/defense.md)
    min_gap: float = 0.5
    checkpoints: int = 40  # influence: at most this many logged checkpoints of the run
    checkpoint_every: int = 100  # updates between logged checkpoints (the training loop's chunk)
    training_defenses: tuple[str, ...] = TRAINING_DEFENSES
    dp_quantile: float = 0.5
    dp_sigma: float = 0.1
    dp_max_steps: int = 0  # cap on the updates of a clipped-and-noised run (0 = the task's max_steps)
    shifts: int = 0  # circular shifts; 0 = all L rolls
    special_noise: float = 0.0  # adaptive attacker: N(0, s^2) on the other positions of special rows


# --------------------------------------------------------------------------------------------
# data and initialisation of one seed
# --------------------------------------------------------------------------------------------


def n_clean_rows(task: ts.Config) -> int:
    return 1 if task.setting == "per_theorem" else task.n_baseline


def seed_data(task: ts.Config, seed: int, special_noise: float = 0.0):
    """``(X, y, special)`` of one seed: the poisoned set's rows ``(N, L)`` (baseline, then special),
    clean labels ``(N,)`` and the mask of the special rows ``(N,) bool``. With ``special_noise > 0``
    the special rows get ``N(0, special_noise^2)`` on every position they do not hold (an attacker
    hiding the end-concentration), from a key of the seed's own, then their teacher labels."""
    X = np.asarray(ts.training_inputs(task, seed), float)
    special = np.arange(X.shape[0]) >= n_clean_rows(task)
    if special_noise > 0:
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 271828)
        z = np.asarray(jax.random.normal(key, X.shape, jnp.float64))
        off = np.ones(X.shape[1], bool)
        off[list(task.positions)] = False
        X = X + special_noise * z * (special[:, None] & off[None, :])
    y = np.asarray(ts.teacher(task)(jnp.asarray(X)))
    return X, y, special


def seed_init(task: ts.Config, seed: int):
    """The seed's initial model: Table 1's (a :class:`DiagonalSSM`; per Theorem ``B = C = 1``)."""
    if task.setting == "per_theorem":
        a = jnp.asarray(ts.per_theorem_init(task, seed))
        return DiagonalSSM(a, jnp.ones_like(a), jnp.ones_like(a))
    return ts.initial_model(task, seed)


# --------------------------------------------------------------------------------------------
# training many sets at once
# --------------------------------------------------------------------------------------------


def _bucket(n: int, size: int) -> int:
    return size * max(1, math.ceil(n / size))


def checkpoint_log(model, data):
    ssm = ts.ssm_of(model.model if isinstance(model, Noisy) else model)
    return {"a": ssm.a, "B": ssm.B, "C": ssm.C}


@dataclass
class Trained:
    """One trained set: the measured error, whether it fit, the final model and checkpoints."""

    error: float
    fits: bool
    diverged: bool
    steps: int
    model: DiagonalSSM
    checkpoints: list


def _stack(trees):
    return jax.tree_util.tree_map(lambda *v: jnp.stack(v), *trees)


def train_sets(task: ts.Config, inits: list, runs: list, opts: Options, kind: str = "plain") -> list[Trained]:
    """Train every ``(seed_index, X, y, w)`` of ``runs`` from ``inits[seed_index]`` with Table 1's
    training of ``task`` (GD settings), in one batch padded to a multiple of 16 runs (so different
    cells of the same shapes share compiled programs). ``kind``: ``"plain"``, or ``"dp"`` (clipped
    per-example gradients with noise, :mod:`.training`). Returns one :class:`Trained` per run."""
    if not runs:
        return []
    if task.setting == "per_theorem":
        return _flow_sets(task, inits, runs)
    B = _bucket(len(runs), 16)
    padded = runs + [runs[0]] * (B - len(runs))
    h_star = ts.teacher(task).impulse_response(task.horizon)[task.error_from - 1 :]
    models, datas = [], []
    for s, X, y, w in padded:
        m = inits[s]
        if task.uses_full_kernel:
            m = FullKernelSSM.from_diagonal(m, task.train_BC)
        n = float(np.sum(w))
        if kind == "dp":
            m = Noisy(m, jnp.asarray(1.0 / n), jnp.asarray(float(task.seeds[s])))
        datas.append({"X": jnp.asarray(X * w[:, None]), "y": jnp.asarray(y * w), "w": jnp.asarray(w, float),
                      "n": jnp.asarray(n), "h_star": h_star})
        models.append(m)
    models, datas = _stack(models), _stack(datas)
    rule = task.stop_rule()
    if kind == "dp":
        loss = clipped_loss(opts.dp_quantile)
        optimizer = _dp_optimizer(task.optimizer, task.lr, task.uses_full_kernel, opts.dp_sigma)
    else:
        loss = ts.train_loss if task.train_BC or task.uses_full_kernel else ts.train_loss_a_only
        optimizer = runtime_lr_optimizer(task.optimizer, task.lr, task.uses_full_kernel)
    res = train_batched(loss, models, datas, optimizer, rule, opts.checkpoint_every, checkpoint_log)
    measured = res.measured.model if kind == "dp" else res.measured
    final = res.params.model if kind == "dp" else res.params
    errors = np.asarray(_errors(measured, datas, task.horizon, task.error_from))
    out = []
    steps, hit, div = np.asarray(res.steps), np.asarray(res.hit_step), np.asarray(res.diverged)
    logs = {k: np.asarray(v) for k, v in res.logs.items()}
    log_steps = np.asarray(res.log_steps)
    for b in range(len(runs)):
        used = np.flatnonzero(log_steps[b] >= 0)
        pick = used[np.unique(np.linspace(0, used.size - 1, min(opts.checkpoints, used.size)).astype(int))]
        ckpts = [DiagonalSSM(jnp.asarray(logs["a"][b, i]), jnp.asarray(logs["B"][b, i]), jnp.asarray(logs["C"][b, i]))
                 for i in pick]
        fm = jax.tree_util.tree_map(lambda v, b=b: v[b], final)
        out.append(Trained(float(errors[b]), bool(hit[b] >= 0) and not bool(div[b]), bool(div[b]), int(steps[b]),
                           det.as_diagonal(ts.ssm_of(fm)), ckpts))
    return out


@functools.cache
def _dp_optimizer(name: str, lr: float, full_kernel: bool, sigma: float):
    return DPOptimizer(runtime_lr_optimizer(name, lr, full_kernel), sigma)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _errors(models, datas, horizon: int, error_from: int):
    return jax.vmap(lambda m, d: ts.generalization_error(m, d, horizon, error_from))(models, datas)


def _flow_sets(task: ts.Config, inits: list, runs: list) -> list[Trained]:
    B = _bucket(len(runs), 16)
    padded = runs + [runs[0]] * (B - len(runs))
    problems = [
        flow.FlowProblem(a0=inits[s].a, w=jnp.ones((task.d,)), X=jnp.asarray(X), y=jnp.asarray(y),
                         row_weight=jnp.asarray(w, float), t_final=jnp.asarray(float(task.t_final)))
        for s, X, y, w in padded
    ]
    n_rows = max(p.X.shape[0] for p in problems)
    batch = flow.pad_problems(problems, d=_bucket(task.d, 32), L=_bucket(task.L, 16), N=_bucket(n_rows, 4))
    res = flow.solve_flow(batch, task.rtol, task.atol)
    a = np.asarray(res.a)[:, : task.d]
    losses = np.asarray(jax.vmap(flow.flow_loss)(jnp.asarray(res.a), batch))
    h_star = ts.teacher(task).impulse_response(task.horizon)[task.error_from - 1 :]
    out = []
    for b, (s, *_rest) in enumerate(runs):
        model = DiagonalSSM(jnp.asarray(a[b]), jnp.ones(task.d), jnp.ones(task.d))
        err = float(ts.generalization_error(model, {"h_star": h_star}, task.horizon, task.error_from))
        out.append(Trained(err, bool(losses[b] <= task.eps and np.asarray(res.success)[b]), False,
                           int(np.asarray(res.num_steps)[b]), model, [inits[s], model]))
    return out


# --------------------------------------------------------------------------------------------
# detectors on one trained set
# --------------------------------------------------------------------------------------------


def score(name: str, task: ts.Config, X, y, trained: Trained, init, seed: int, opts: Options):
    """``(scores, flags)`` of detector ``name`` on the rows ``X: (n, L)``, labels ``y: (n,)`` of one
    training set, given the model trained on it (and its checkpoints) and the initial model."""
    X, y = np.asarray(X), np.asarray(y)
    own = None
    if name == "nongreedy_share":
        s = det.nongreedy_share(X)
    elif name == "energy_tail":
        s = det.energy_tail(X, det.tail_window(task.L))
    elif name == "gamma0":
        s = det.gamma0_magnitude(det.as_diagonal(init), jnp.asarray(X), jnp.asarray(y))
    elif name == "influence_init":
        s = det.influence([det.as_diagonal(init)], X, y, det.log_tail_energy(task.L, task.horizon), normalize=False)
    elif name == "influence_rank_init":
        s = det.influence([det.as_diagonal(init)], X, y, det.effective_rank_of, normalize=False)
    elif name == "influence_tracin":
        s = det.influence(trained.checkpoints, X, y, det.log_tail_energy(task.L, task.horizon))
    elif name == "loss":
        s = det.loss_scores(trained.model, X, y)
    elif name == "grad_norm":
        s = det.grad_norm_scores(trained.model, X, y)
    elif name == "input_norm":
        s = det.input_norm(X)
    elif name == "spectral":
        s = det.spectral_signature(det.final_states(trained.model, X), np.zeros(len(X), int))
    elif name == "clustering":
        s, own = det.activation_clustering(det.final_states(trained.model, X), np.zeros(len(X), int))
    elif name == "random":
        s = np.random.default_rng([seed, 7, len(X)]).random(len(X))
    else:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    s = np.where(np.isfinite(s), s, np.nanmax(np.where(np.isfinite(s), s, -np.inf)) if np.isfinite(s).any() else 0.0)
    rule = RULES.get(name, "gap")
    flags = own if rule == "own" else flag(s, rule, opts.share_threshold, opts.min_gap)
    return np.asarray(s, float), np.asarray(flags, bool)


# --------------------------------------------------------------------------------------------
# the whole cell
# --------------------------------------------------------------------------------------------


def run(task: ts.Config, opts: Options) -> dict:
    """Every seed of ``task`` (a cell *with* special sequences): clean and poisoned training, every
    detector, sanitise-and-retrain on both sets, training-time defenses. Returns per-seed lists."""
    if not task.special:
        raise ValueError("task must have special sequences (the poisoned cell)")
    times = {}
    t0 = time.perf_counter()
    seeds = list(task.seeds)
    data = [seed_data(task, s, opts.special_noise) for s in seeds]
    inits = [seed_init(task, s) for s in seeds]
    masks = {i: {"clean": (~sp).astype(float), "poisoned": np.ones(len(sp))} for i, (_, _, sp) in enumerate(data)}

    trained: dict[tuple, Trained] = {}

    def run_batch(keys: list[tuple]):
        todo = [k for k in dict.fromkeys(keys) if k not in trained]
        runs = [(k[0], data[k[0]][0], data[k[0]][1], np.asarray(k[1], float)) for k in todo]
        for k, t in zip(todo, train_sets(task, inits, runs, opts)):
            trained[k] = t

    key_of = lambda i, w: (i, tuple(np.asarray(w, float).tolist()))
    run_batch([key_of(i, masks[i][v]) for i in range(len(seeds)) for v in ("clean", "poisoned")])
    times["train_clean_poisoned_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out_det: dict[str, dict] = {}
    pending = []
    for name in opts.detectors:
        rec = {k: [] for k in ("auroc", "recall", "n_flagged", "n_special_flagged", "n_flagged_clean",
                               "roc_fpr", "roc_tpr")}
        rec["_keys"], rec["_keys_clean"] = [], []
        for i, s in enumerate(seeds):
            X, y, sp = data[i]
            for which in ("poisoned", "clean"):
                w = masks[i][which]
                rows = np.flatnonzero(w > 0)
                t = trained[key_of(i, w)]
                sc, fl = score(name, task, X[rows], y[rows], t, inits[i], s, opts)
                keep = w.copy()
                keep[rows[fl]] = 0.0
                if keep.sum() == 0:  # a defender never trains on nothing: keep the set as it was
                    keep = w.copy()
                k = key_of(i, keep)
                pending.append(k)
                if which == "poisoned":
                    lab = sp[rows]
                    record_detection(rec, sc, fl, lab, "n_special_flagged")
                    rec["_keys"].append(k)
                else:
                    rec["n_flagged_clean"].append(int(fl.sum()))
                    rec["_keys_clean"].append(k)
        out_det[name] = rec
    times["detect_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_batch(pending)
    times["retrain_s"] = time.perf_counter() - t0
    for rec in out_det.values():
        ks, kc = rec.pop("_keys"), rec.pop("_keys_clean")
        rec["error_defended"] = [trained[k].error for k in ks]
        rec["fits_defended"] = [trained[k].fits for k in ks]
        rec["error_clean_defended"] = [trained[k].error for k in kc]
        rec["fits_clean_defended"] = [trained[k].fits for k in kc]

    clean = [trained[key_of(i, masks[i]["clean"])] for i in range(len(seeds))]
    pois = [trained[key_of(i, masks[i]["poisoned"])] for i in range(len(seeds))]
    out = {
        "seeds": seeds,
        "n_rows": int(len(data[0][2])),
        "n_special": int(data[0][2].sum()),
        "error_clean": [t.error for t in clean],
        "error_poisoned": [t.error for t in pois],
        "fits_clean": [t.fits for t in clean],
        "fits_poisoned": [t.fits for t in pois],
        "steps_clean": [t.steps for t in clean],
        "steps_poisoned": [t.steps for t in pois],
        "detectors": out_det,
        "training": {},
        "runs_trained": len(trained),
    }
    for name in opts.training_defenses if task.setting != "per_theorem" else ():
        t0 = time.perf_counter()
        out["training"][name] = training_defense(name, task, inits, data, masks, opts)
        times[f"{name}_s"] = time.perf_counter() - t0
    out["times"] = times
    return out


def training_defense(name: str, task: ts.Config, inits, data, masks, opts: Options) -> dict:
    """Train the poisoned and the clean set of every seed with a training-time defense:
    ``{'error_defended', 'fits_defended', 'error_clean_defended', 'fits_clean_defended'}`` per seed."""
    runs = []
    for i, (X, y, _) in enumerate(data):
        for which in ("poisoned", "clean"):
            w = masks[i][which]
            if name == "shift":
                Xs, ys, ws = circular_shifts(X, y, w, opts.shifts or task.L)
                runs.append((i, Xs, ys, ws))
            else:
                runs.append((i, X, y, w))
    if name == "shift":
        res = train_sets(task, inits, runs, opts)
    elif name == "dp":
        # one noised update costs ~10 plain ones on a CPU (the draws); a run that has not fit by the
        # cap is recorded as not fit
        capped = replace(task, max_steps=min(task.max_steps, opts.dp_max_steps or task.max_steps))
        res = train_sets(capped, inits, runs, opts, kind="dp")
    else:
        raise ValueError(f"unknown training defense {name!r}; known: {', '.join(TRAINING_DEFENSES)}")
    return {
        "error_defended": [r.error for r in res[0::2]],
        "fits_defended": [r.fits for r in res[0::2]],
        "error_clean_defended": [r.error for r in res[1::2]],
        "fits_clean_defended": [r.fits for r in res[1::2]],
        "steps_defended": [r.steps for r in res[0::2]],
        "steps_clean_defended": [r.steps for r in res[1::2]],
    }


def with_attack(task: ts.Config, n_special: int = 0, positions: tuple[int, ...] = (), max_steps: int = 0,
                seeds: tuple[int, ...] = ()) -> ts.Config:
    """``task`` with special sequences and the attacker's choices (0 / empty = the cell's own)."""
    changes = {"special": True}
    if n_special:
        changes["n_special"] = n_special
    if positions:
        changes["special_positions"] = tuple(positions)
    if max_steps:
        changes["max_steps"] = max_steps
    if seeds:
        changes["seeds"] = tuple(seeds)
    return replace(task, **changes)
