"""Real-world clean-label poisoning of S4D, LRU and Mamba2 digit classifiers (SPEC §4, issue #4).

Protocol, per seed ``s`` (everything seeded by ``s``):

1. **Data**: scikit-learn digits as length-64 sequences (row-major scan), a stratified split with
   ``n_train`` training examples drawn with seed ``s``, standardised with train-only statistics.
2. **Clean run**: the classifier ``make_classifier(model_config, s)`` (the *initialisation*, kept)
   trained with AdamW/cosine for ``epochs`` epochs, minibatch order from ``PRNGKey(s)``.
3. **Targets**: ``n_targets`` test examples drawn at random (seed ``s``). They stay in the test set;
   test accuracy is also reported on the test examples that are *not* targets (``rest``).
4. **Brew**: ``round(poison_frac * n_train)`` training rows drawn at random are the poison pool,
   split among ``target_groups`` groups (:func:`implicitbias.poison.allocate_groups`: correct high-loss
   targets get half the poisons); each group is matched separately (untargeted gradient matching,
   cosine over all parameters, sign-Adam, step decay, ``restarts`` keeping the best, ℓ∞ projection,
   optional end-of-sequence penalty ``penalty``/``penalty_power``), against the clean-trained model.
5. **Variants**, each retrained from the **same initialisation** and the same minibatch key on the
   poisoned set (``mode``: ``duplicate`` = clean set + perturbed copies, ``replace`` = perturbed in
   place; poisons keep their labels), then, while its training loss is above the clean model's
   (on the clean set), up to ``max_rounds`` extra rounds of ``extra_epochs`` epochs at ``lr / 10``:

   * ``poisoned``: the matched perturbation;
   * ``uniform``: per poison, a ``U[-1,1]`` direction over the whole sequence rescaled to that
     poison's matched ℓ2 norm (same energy; may leave the ℓ∞ box and the pixel range);
   * ``end``: the same, supported on the last ``ceil(last_frac * L)`` positions (same energy,
     special-sequence-like placement).

Budget units. ``eps`` is given in **raw pixel units** (digits take values 0..16, so ``eps=4`` is a
quarter of the range, i.e. 64/255 of an 8-bit image; CIFAR-10 pixels are scaled to 0..1, so the
paper-style 8/255 is ``eps=0.0314``). The model sees ``(x - mean) / std``; the model-unit budget is
``eps / max(std)`` (exact for digits with ``standardize="channel"``, one scalar std; with several
channels or ``standardize="feature"`` the raw budget holds everywhere and is tighter where the std
is smaller). With ``clip=True`` (needs ``standardize="channel"``) perturbed pixels are kept in the
valid raw range, per channel (``clip_min = -mean/std``, ``clip_max = (range - mean)/std``).

Data. ``dataset="digits"`` (default; ships with scikit-learn) or ``dataset="cifar10"``: sequential
CIFAR-10 (1,024 steps x 3 channels, ``scan`` = ``row`` or the paper's ``channel_major``) read from
``data_dir``, the unpacked python-pickle batches the user provides (nothing is downloaded). For the
full-size setting use a GPU and e.g. ``--set dataset=cifar10 --set data_dir=/path --set n_train=50000
--set eps=0.0314 --set d_model=128 --set n_layers=4``.

Recorded per seed and variant: train loss/accuracy on the set it was trained on and on the clean
training set, test loss/accuracy (all, targets, rest), extra rounds and whether it fit, wall time;
for perturbations: the share of ``sum |delta|^2`` in the last ``last_frac`` of the sequence, mean
per-poison ℓ2 norm, max |delta| (model units), and the matching loss ``M`` at the clean model;
the brew's objective/matching loss per group; times of clean training and brewing.

Presets (5 seeds each; width 32, 16 states, 2 layers, norm, 30 epochs, 1,000 training digits,
``eps = 4`` raw pixel units (64/255 of the range) with the range clip, 500 poisons (50%) in
duplicate mode, 200 targets in 2 groups, 50 sign-Adam iterations, 1 restart, no end penalty):
``<model>/digits/<readout>`` for model ``s4d | lru | mamba2`` and readout ``mean`` (pooling) or
``last`` (last-step readout); ``--preset s4d/digits`` selects both readouts. Measured cost on the
shared 2-core CPU: ``s4d/digits/mean`` about 5 min (per seed ~8 s clean training, ~19 s brew, ~10 s
per retraining, 4 trainings), ``s4d/digits/last`` about 4 min; Mamba2 is several times slower.
The levers of SPEC §4 are swept with ``--sweep`` (``scripts/sweep_realworld.py`` holds the grid).

Report: per preset, mean ± 95% t-interval over seeds of every variant's test accuracy/loss, target
accuracy and energy share; paired differences (poisoned - clean, poisoned - uniform control) of test
error with their t-intervals and a verdict; a scatter of clean vs poisoned (and control) test error
per seed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..datasets import load_cifar10, load_digits
from ..models import ClassifierConfig, make_classifier
from ..poison import BrewConfig, allocate_groups, assemble, craft_poisons, energy_share, matching_loss, retrain
from ..poison import synthetic, target_stats
from ..train_classifier import TrainConfig, classification_loss, evaluate, predict_logits, trainer
from .base import Record, base_preset, config_to_dict, require

NAME = "realworld"
log = logging.getLogger("implicitbias")
VARIANTS = ("clean", "poisoned", "uniform", "end")
RAW_RANGE = 16.0  # digits pixels take values 0..16
RAW_RANGES = {"digits": RAW_RANGE, "cifar10": 1.0}  # cifar10: pixels scaled to [0, 1] by the loader


@dataclass(frozen=True)
class Config:
    """One realworld cell; see the module docstring for the protocol and units."""

    model: str = "s4d"  # s4d | lru | mamba2
    dataset: str = "digits"  # digits (ships with scikit-learn) | cifar10 (sequential, from data_dir)
    data_dir: str = ""  # cifar10 only: the unpacked python-pickle batches (never downloaded)
    scan: str = "row"  # cifar10 only: row | channel_major (the paper's S4/LRU order)
    n_test: int = 0  # cifar10 only: keep the first n_test test images (0 = all 10,000)
    d_model: int = 32
    d_state: int = 16
    n_layers: int = 2
    readout: str = "mean"  # mean | last
    norm: bool = True
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-2
    n_train: int = 1000
    standardize: str = "channel"  # channel (exact scalar budget) | feature
    eps: float = 4.0  # ℓ∞ budget in raw pixel units (range 0..16)
    clip: bool = True  # keep perturbed pixels inside [0, 16] (channel standardisation only)
    poison_frac: float = 0.5  # poisons as a fraction of n_train
    n_targets: int = 200
    target_groups: int = 2
    penalty: float = 0.0  # end-of-sequence penalty weight (0 = off)
    penalty_power: float = 1.0
    iterations: int = 50
    restarts: int = 1
    brew_lr: float = 0.1  # sign-Adam step in units of eps
    mode: str = "duplicate"  # duplicate | replace
    last_frac: float = 0.25  # "end of the sequence" for the energy share and the end control
    max_rounds: int = 3  # extra retraining rounds until the poisoned set fits as well as clean
    extra_epochs: int = 10  # epochs of one extra round (at lr / 10)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    def __post_init__(self):
        require(self.model in ("s4d", "lru", "mamba2"), f"model must be s4d, lru or mamba2, got {self.model!r}")
        require(self.readout in ("mean", "last"), f"readout must be 'mean' or 'last', got {self.readout!r}")
        for name in ("d_model", "d_state", "n_layers", "epochs", "batch_size", "iterations", "restarts",
                     "target_groups", "n_targets", "extra_epochs"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v > 0, f"{name} must be a positive integer, got {v!r}")
        require(isinstance(self.max_rounds, int) and self.max_rounds >= 0, f"max_rounds must be an integer >= 0, got {self.max_rounds!r}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.brew_lr > 0, f"brew_lr must be > 0, got {self.brew_lr}")
        require(self.dataset in RAW_RANGES, f"dataset must be one of {', '.join(RAW_RANGES)}, got {self.dataset!r}")
        if self.dataset == "digits":
            require(isinstance(self.n_train, int) and 20 <= self.n_train <= 1700, f"n_train must be an integer in [20, 1700], got {self.n_train!r}")
            require(self.n_targets <= 1797 - self.n_train, f"n_targets must be <= the test set size {1797 - self.n_train}, got {self.n_targets}")
        else:
            require(bool(self.data_dir), "dataset=cifar10 needs data_dir (the unpacked CIFAR-10 python batches; never downloaded)")
            require(self.scan in ("row", "channel_major"), f"scan must be 'row' or 'channel_major', got {self.scan!r}")
            require(isinstance(self.n_train, int) and 20 <= self.n_train <= 50_000, f"n_train must be an integer in [20, 50000], got {self.n_train!r}")
            require(isinstance(self.n_test, int) and 0 <= self.n_test <= 10_000, f"n_test must be an integer in [0, 10000], got {self.n_test!r}")
            require(self.n_targets <= (self.n_test or 10_000), f"n_targets must be <= the test set size, got {self.n_targets}")
        require(self.standardize in ("channel", "feature"), f"standardize must be 'channel' or 'feature', got {self.standardize!r}")
        require(not (self.clip and self.standardize != "channel"), "clip=True needs standardize='channel' (a per-channel pixel range)")
        raw = RAW_RANGES.get(self.dataset, RAW_RANGE)
        require(0 < self.eps <= raw, f"eps must be in (0, {raw}] raw pixel units for {self.dataset}, got {self.eps}")
        require(0 < self.poison_frac <= 1, f"poison_frac must be in (0, 1], got {self.poison_frac}")
        require(round(self.poison_frac * self.n_train) >= 1, f"poison_frac * n_train must give at least one poison")
        require(self.penalty >= 0, f"penalty must be >= 0, got {self.penalty}")
        require(self.penalty_power > 0, f"penalty_power must be > 0, got {self.penalty_power}")
        require(self.mode in ("duplicate", "replace"), f"mode must be 'duplicate' or 'replace', got {self.mode!r}")
        require(0 < self.last_frac <= 1, f"last_frac must be in (0, 1], got {self.last_frac}")
        require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), f"seeds must be non-empty and distinct, got {self.seeds}")

    @property
    def model_config(self) -> ClassifierConfig:
        return ClassifierConfig(kind=self.model, d_input=3 if self.dataset == "cifar10" else 1, n_classes=10,
                                d_model=self.d_model, d_state=self.d_state, n_layers=self.n_layers,
                                readout=self.readout, norm=self.norm)

    def load(self, seed: int):
        """The data set of one seed: digits with a stratified split drawn with ``seed``; CIFAR-10 from
        ``data_dir`` (its first ``n_train`` training images and first ``n_test`` test images, the same
        for every seed: the seed then draws the initialisation, targets, poisons and batches)."""
        if self.dataset == "digits":
            return load_digits(n_train=self.n_train, seed=seed, scan="row", standardize=self.standardize)
        return load_cifar10(self.data_dir, scan=self.scan, standardize=self.standardize, n_train=self.n_train,
                            n_test=self.n_test or None)

    @property
    def n_poisons(self) -> int:
        return int(round(self.poison_frac * self.n_train))


_SMALL = Config()
PRESETS: dict[str, Config] = {
    f"{model}/digits/{readout}": replace(_SMALL, model=model, readout=readout)
    for model in ("s4d", "lru", "mamba2") for readout in ("mean", "last")
}


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------

def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """``(mean, half_width)`` of the two-sided ``level`` Student-t interval over ``values``
    (``half_width = t_{(1+level)/2, n-1} * s / sqrt(n)``, ``s`` with ``ddof=1``; NaN for one value)."""
    from scipy import stats

    v = np.asarray(values, float)
    n = v.size
    mean = float(np.mean(v)) if n else float("nan")
    if n < 2:
        return mean, float("nan")
    s = float(np.std(v, ddof=1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1) * s / math.sqrt(n))


# --------------------------------------------------------------------------------------------
# one seed
# --------------------------------------------------------------------------------------------

def same_norm_random(key, delta, first: int = 0) -> np.ndarray:
    """Per poison, a ``U[-1,1]`` direction supported on time positions ``first..L-1`` (axis 1),
    rescaled to that poison's ℓ2 norm in ``delta (P, L, C)`` (``poison.synthetic.same_norm_random``)."""
    delta = np.asarray(delta)
    return np.asarray(synthetic.same_norm_random(key, jnp.asarray(delta), slice(first, None)), dtype=delta.dtype)


def loss_only(model, x, y):
    """``classification_loss`` without the accuracy: the ``loss_fn(model, x, y)`` of the attack."""
    return classification_loss(model, x, y)[0]


def full_loss(model, x, y) -> float:
    """Mean cross-entropy over a whole set (chunked): the fit criterion of the retraining."""
    return evaluate(model, np.asarray(x), np.asarray(y))["loss"]


def budget(cfg: Config, meta: dict) -> tuple[float, float | None, float | None]:
    """``(eps, clip_min, clip_max)`` in model units (module docstring)."""
    std = np.asarray(meta["std"], float)
    mean = np.asarray(meta["mean"], float)
    eps = cfg.eps / float(std.max())
    if cfg.standardize == "channel" and cfg.clip:
        # (1, C) per-channel range of the standardised pixels; broadcasts over (P, L, C)
        return eps, ((0.0 - mean) / std).astype(np.float32), ((RAW_RANGES[cfg.dataset] - mean) / std).astype(np.float32)
    return eps, None, None


@eqx.filter_jit
def masked_direction(model, x_t, y_t, w):
    """``-grad_theta`` of the mean cross-entropy over the targets with ``w = 1`` (``w`` 0/1).

    Equal to ``target_direction(loss_only, model, x_t[w], y_t[w], "untargeted")``; the targets are
    padded to a fixed size so every group and seed shares one compilation (the eager version
    recompiles every primitive for each new group size)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def f(p):
        logits = jax.vmap(eqx.combine(p, static))(x_t)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_t)
        return jnp.sum(ce * w) / jnp.sum(w)

    return jax.tree_util.tree_map(jnp.negative, jax.grad(f)(params))


_matching_jit = eqx.filter_jit(matching_loss)


def craft(model, x_pool, y_pool, x_t, y_t, groups, key, bc: BrewConfig):
    """Each group matched separately (as :func:`implicitbias.poison.craft_groups`, with the
    compiled :func:`masked_direction`). Returns the pool's perturbation and one result per group."""
    delta = np.zeros_like(np.asarray(x_pool))
    results = []
    x_t, y_t = jnp.asarray(x_t), jnp.asarray(y_t)
    for g, k in zip(groups, jax.random.split(key, len(groups))):
        w = np.zeros(x_t.shape[0], np.float32)
        w[g.targets] = 1.0
        direction = masked_direction(model, x_t, y_t, jnp.asarray(w))
        res = craft_poisons(model, loss_only, jnp.asarray(x_pool[g.poisons]), jnp.asarray(y_pool[g.poisons]),
                            direction, k, bc)
        delta[g.poisons] = np.asarray(res.delta)
        results.append(res)
    return delta, results


def run_seed(cfg: Config, seed: int, keep: bool = False) -> dict:
    """Clean run, brew, controls and retraining for one seed. With ``keep`` the returned dict also
    holds ``"models"`` (trained models per variant), ``"inits"`` (the model each variant's
    training started from), ``"data"`` and ``"sets"`` (the assembled training sets) for tests."""
    ds = cfg.load(seed)
    x, y, xt, yt = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    L = x.shape[1]
    rng = np.random.default_rng(seed)
    init = make_classifier(cfg.model_config, seed)
    # TrainConfig is a static (hashed) argument of the compiled loop: keep its seed fixed so seeds share
    # one compilation; the minibatch order comes from the explicit key PRNGKey(seed) below.
    tc = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=0)
    cc = TrainConfig(epochs=cfg.extra_epochs, batch_size=cfg.batch_size, lr=cfg.lr / 10, warmup_frac=0.0, seed=0)
    inits: dict[str, object] = {}
    current = ["clean"]
    base_train = trainer(tc)

    def train_fn(model, xx, yy, key):
        inits.setdefault(current[0], model)
        return base_train(model, xx, yy, key)

    key = jax.random.PRNGKey(seed)

    t0 = time.perf_counter()
    current[0] = "clean"
    clean = retrain(init, x, y, train_fn, key, full_loss)
    t_clean = time.perf_counter() - t0

    target_idx = np.sort(rng.choice(xt.shape[0], cfg.n_targets, replace=False))
    rest_mask = np.ones(xt.shape[0], bool)
    rest_mask[target_idx] = False
    x_t, y_t = xt[target_idx], yt[target_idx]
    pool = np.sort(rng.choice(x.shape[0], cfg.n_poisons, replace=False))
    x_pool, y_pool = x[pool], y[pool]

    eps_m, cmin, cmax = budget(cfg, ds.meta)
    bc = BrewConfig(eps=eps_m, iterations=cfg.iterations, restarts=cfg.restarts, lr=cfg.brew_lr, penalty=cfg.penalty,
                    penalty_power=cfg.penalty_power, clip_min=cmin, clip_max=cmax)
    predict = lambda m, xx: jnp.asarray(predict_logits(m, np.asarray(xx)))
    t_losses, t_correct = target_stats(clean.model, x_t, y_t, predict)
    groups = allocate_groups(t_losses, t_correct, cfg.n_poisons, seed=seed, n_groups=cfg.target_groups)
    t0 = time.perf_counter()
    delta, brew_results = craft(clean.model, x_pool, y_pool, x_t, y_t, groups, jax.random.fold_in(key, 1), bc)
    t_brew = time.perf_counter() - t0

    n_last = max(1, math.ceil(cfg.last_frac * L - 1e-9))
    ku, ke = jax.random.split(jax.random.fold_in(key, 2))
    deltas = {"poisoned": delta,
              "uniform": same_norm_random(ku, delta),
              "end": same_norm_random(ke, delta, L - n_last)}

    def measure(model, x_fit, y_fit):
        tr = evaluate(model, x_fit, y_fit)
        trc = evaluate(model, x, y)
        te = evaluate(model, xt, yt)
        tg = evaluate(model, x_t, y_t)
        rs = evaluate(model, xt[rest_mask], yt[rest_mask])
        return {"train_loss": tr["loss"], "train_acc": tr["accuracy"], "clean_train_loss": trc["loss"],
                "clean_train_acc": trc["accuracy"], "test_loss": te["loss"], "test_acc": te["accuracy"],
                "target_loss": tg["loss"], "target_acc": tg["accuracy"], "rest_loss": rs["loss"],
                "rest_acc": rs["accuracy"]}

    out = {"clean": {**measure(clean.model, x, y), "rounds": 0, "fits": True, "time_s": t_clean}}
    models = {"clean": clean.model}
    # matching loss of each perturbation over all poisons against the all-target direction
    direction = masked_direction(clean.model, jnp.asarray(x_t), jnp.asarray(y_t), jnp.ones(x_t.shape[0], jnp.float32))
    sets = {}
    for name, d in deltas.items():
        ps = assemble(x, y, pool, d, cfg.mode)
        sets[name] = ps
        current[0] = name
        t0 = time.perf_counter()
        r = retrain(init, np.asarray(ps.x), np.asarray(ps.y), train_fn, key, full_loss, target_loss=clean.train_loss,
                    continue_fn=trainer(cc), max_rounds=cfg.max_rounds)
        norms = np.sqrt((d.reshape(d.shape[0], -1) ** 2).sum(1))
        out[name] = {**measure(r.model, np.asarray(ps.x), np.asarray(ps.y)), "rounds": r.rounds, "fits": r.fits,
                     "time_s": time.perf_counter() - t0, "energy_share": energy_share(d, cfg.last_frac),
                     "l2_mean": float(norms.mean()), "linf": float(np.abs(d).max()),
                     "matching_loss": float(_matching_jit(jnp.asarray(d), clean.model, loss_only, jnp.asarray(x_pool),
                                                          jnp.asarray(y_pool), direction))}
        models[name] = r.model
    out["brew"] = {"objective": [float(res.objective) for res in brew_results],
                   "matching": [float(res.matching) for res in brew_results],
                   "penalty": [float(res.penalty) for res in brew_results],
                   "groups": [g.name for g in groups], "group_sizes": [[int(g.targets.size), int(g.poisons.size)] for g in groups],
                   "objective_mean": float(np.mean([float(res.objective) for res in brew_results])),
                   "matching_mean": float(np.mean([float(res.matching) for res in brew_results]))}
    out["times"] = {"clean_train_s": t_clean, "brew_s": t_brew}
    out["budget"] = {"eps_model": eps_m, "clip_min": cmin, "clip_max": cmax}
    out["arrays"] = {"target_idx": target_idx, "poison_idx": pool, **{f"delta_{k}": v for k, v in deltas.items()}}
    if keep:
        out["models"] = models
        out["inits"] = dict(inits)
        out["data"] = ds
        out["sets"] = sets
        out["groups"] = groups
    return out


def run(config: Config) -> Record:
    """Every seed of ``config``: per-seed metrics lists and the stored perturbations. One log line
    per finished seed (logger ``implicitbias``; the CLI prints it under its progress bar)."""
    start = time.perf_counter()
    per = []
    for i, s in enumerate(config.seeds):
        t0 = time.perf_counter()
        per.append(run_seed(config, s))
        acc = "  ".join(f"{v} {100 * per[-1][v]['test_acc']:.2f}%" for v in VARIANTS)
        log.info("realworld seed %d (%d/%d) done in %.0f s: test accuracy %s", s, i + 1, len(config.seeds),
                 time.perf_counter() - t0, acc)
    return collect(config, per, time.perf_counter() - start)


def collect(config: Config, per: list[dict], wall_seconds: float | None = None) -> Record:
    """The ``Record`` of a run from the per-seed dicts of :func:`run_seed` (in ``config.seeds`` order)."""
    metrics = {"seeds": list(config.seeds), "variants": list(VARIANTS), "n_poisons": config.n_poisons,
               "eps_model": [p["budget"]["eps_model"] for p in per]}
    for v in VARIANTS:
        for k in per[0][v]:
            metrics[f"{v}_{k}"] = [p[v][k] for p in per]
    for k in ("objective_mean", "matching_mean", "objective", "matching", "penalty", "group_sizes"):
        metrics[f"brew_{k}"] = [p["brew"][k] for p in per]
    metrics["brew_groups"] = per[0]["brew"]["groups"]
    for k in ("clean_train_s", "brew_s"):
        metrics[k] = [p["times"][k] for p in per]
    metrics["wall_seconds"] = wall_seconds
    arrays = {k: np.stack([p["arrays"][k] for p in per]) for k in per[0]["arrays"]}
    return Record(metrics, arrays)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def report_rows(runs) -> list[dict]:
    """One row per stored config (latest run): per-seed lists, mean and 95% t-half-width of each
    quantity, and the paired differences of test error."""
    latest = {}
    for r in runs:
        latest[r.path.name] = r
    rows = []
    for r in latest.values():
        m = r.metrics
        cfg = r.config
        row = {"experiment": NAME, "preset": r.preset or "custom", "model": cfg["model"], "readout": cfg["readout"],
               "eps": cfg["eps"], "poison_frac": cfg["poison_frac"], "penalty": cfg["penalty"], "mode": cfg["mode"],
               "epochs": cfg["epochs"], "iterations": cfg["iterations"], "restarts": cfg["restarts"],
               "seeds": m["seeds"], "wall_seconds": m.get("wall_seconds"),
               "backend": (r.meta.get("versions") or {}).get("backend", "unknown")}
        overrides = {}
        base = PRESETS.get(base_preset(r.preset or ""))
        if base is not None:
            overrides = {k: v for k, v in cfg.items() if k in config_to_dict(base) and _tuples(v) != getattr(base, k)}
        row["overrides"] = overrides
        for v in VARIANTS:
            for q in ("test_acc", "test_loss", "target_acc", "rest_acc", "train_loss", "clean_train_acc", "fits", "rounds",
                      "energy_share", "matching_loss", "l2_mean", "linf"):
                key = f"{v}_{q}"
                if key in m:
                    vals = [float(x) for x in m[key]]
                    row[f"{key}_per_seed"] = vals
                    row[f"{key}_mean"], row[f"{key}_ci"] = t_interval(vals)
        err = {v: 1 - np.asarray(m[f"{v}_test_acc"], float) for v in VARIANTS}
        for a, b in (("poisoned", "clean"), ("poisoned", "uniform"), ("poisoned", "end")):
            row[f"diff_err_{a}_{b}_mean"], row[f"diff_err_{a}_{b}_ci"] = t_interval(err[a] - err[b])
        row["brew_matching_mean"], row["brew_matching_ci"] = t_interval(m["brew_matching_mean"])
        row["clean_train_s_mean"] = float(np.mean(m["clean_train_s"]))
        row["brew_s_mean"] = float(np.mean(m["brew_s"]))
        rows.append(row)
    rows.sort(key=lambda r: r["preset"])
    return rows


def is_sweep_row(row) -> bool:
    """Made by ``--sweep`` (its preset name carries the swept values)."""
    return base_preset(row["preset"]) != row["preset"]


def _pm(row, key, scale=1.0, digits=3):
    mean, ci = row.get(f"{key}_mean"), row.get(f"{key}_ci")
    if mean is None:
        return "-"
    if ci is None or not math.isfinite(ci):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {ci * scale:.{digits}f}"


def _compare(row, other: str) -> str:
    mean, ci = row[f"diff_err_poisoned_{other}_mean"], row[f"diff_err_poisoned_{other}_ci"]
    if mean - ci > 0:
        return "above"
    if mean + ci < 0:
        return "below"
    return "not different from"


def _decision(row) -> tuple[str, str, str]:
    """``(kind, vs clean, vs uniform)`` from the paired 95% CIs of test error; ``kind`` is ``n/a``
    (too few seeds), ``effect`` (significantly above both clean and the uniform control, every
    poisoned model fitting as well as clean), ``effect_not_fit``, ``reverse`` (significantly below
    clean) or ``none``."""
    if not all(math.isfinite(row[f"diff_err_poisoned_{b}_ci"]) for b in ("clean", "uniform")):
        return "n/a", "", ""
    c, u = _compare(row, "clean"), _compare(row, "uniform")
    if c == u == "above":
        return ("effect" if all(row.get("poisoned_fits_per_seed") or []) else "effect_not_fit"), c, u
    return ("reverse" if c == "below" else "none"), c, u


def verdict(row) -> str:
    """One line from the paired 95% CIs of test error: an effect needs poisoned error significantly
    above the clean model's *and* above the same-norm uniform control's."""
    kind, c, u = _decision(row)
    if kind == "n/a":
        return "too few seeds for an interval"
    if kind.startswith("effect"):
        fits = row.get("poisoned_fits_per_seed") or []
        caveat = "" if kind == "effect" else (
            f"; but the poisoned model fit its data as well as the clean one in only {int(sum(fits))}/{len(fits)} "
            "seeds, so part of the gap may be under-fitting")
        return "effect: poisoned test error significantly above both clean and the same-norm uniform control" + caveat
    return (f"no significant effect: poisoned test error is {c} clean "
            f"({100 * row['diff_err_poisoned_clean_mean']:+.2f} ± {100 * row['diff_err_poisoned_clean_ci']:.2f} pts) "
            f"and {u} the uniform control "
            f"({100 * row['diff_err_poisoned_uniform_mean']:+.2f} ± {100 * row['diff_err_poisoned_uniform_ci']:.2f} pts)")


def _figure(rows: list[dict], out_dir: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    fig_dir = Path(out_dir) / "figures" / NAME
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    markers = {"poisoned": "o", "uniform": "^", "end": "s"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lo, hi = 1.0, 0.0
    for i, r in enumerate(rows):
        c = colors[i % len(colors)]
        ce = 1 - np.asarray(r["clean_test_acc_per_seed"])
        for v, mk in markers.items():
            ve = 1 - np.asarray(r[f"{v}_test_acc_per_seed"])
            lo, hi = min(lo, ce.min(), ve.min()), max(hi, ce.max(), ve.max())
            ax.scatter(ce, ve, marker=mk, color=c, alpha=0.9 if v == "poisoned" else 0.45,
                       facecolors=c if v == "poisoned" else "none",
                       label=f"{r['preset']} {v}" + (" *" if r["overrides"] else ""))
    pad = 0.1 * max(hi - lo, 1e-3)
    lim = (max(0.0, lo - pad), hi + pad)
    ax.plot(lim, lim, "k--", lw=1)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("clean test error")
    ax.set_ylabel("retrained test error (poisoned / control)")
    ax.set_title("one point per seed; above the diagonal = worse", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    path = fig_dir / "clean_vs_poisoned.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def short_verdict(row) -> str:
    """``**effect**`` / ``effect, not fit`` / ``none`` / ``reverse`` / ``n/a`` (see :func:`_decision`)."""
    return {"effect": "**effect**", "effect_not_fit": "effect, not fit"}.get(_decision(row)[0], _decision(row)[0])


def _nfit(row, variant: str) -> str:
    fits = row.get(f"{variant}_fits_per_seed")
    return "-" if fits is None else f"{int(sum(fits))}/{len(fits)}"


def sweep_markdown(rows: list[dict]) -> str:
    """One line per swept config: accuracies of every variant, paired differences, verdict."""
    out = ["Lever sweep (`--sweep`; `scripts/sweep_realworld.py`): one line per stored config, 95% t-intervals "
           "over its seeds. Test accuracy in %; differences of test error in points (poisoned minus clean / "
           "minus the same-norm uniform control); verdict `effect` needs both significantly above 0 and every "
           "poisoned model fitting its training set as well as the clean model did (`effect, not fit` otherwise: "
           "the gap may be under-fitting), `reverse` = poisoned significantly better than clean. Fits: seeds whose "
           "poisoned / uniform-control model reached the clean model's training loss.\n",
           "| base preset | swept | seeds | clean | poisoned | uniform | end | poisoned - clean | poisoned - uniform | "
           "energy share end | brew M | fits | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (base_preset(r["preset"]), r["preset"])):
        swept = r["preset"][len(base_preset(r["preset"])):].strip("[]")
        out.append(f"| {base_preset(r['preset'])} | {swept} | {len(r['seeds'])} ({','.join(map(str, r['seeds']))}) | "
                   + " | ".join(_pm(r, f"{v}_test_acc", 100, 2) for v in VARIANTS)
                   + f" | {_pm(r, 'diff_err_poisoned_clean', 100, 2)} | {_pm(r, 'diff_err_poisoned_uniform', 100, 2)} | "
                   f"{_pm(r, 'poisoned_energy_share', 1, 2)} | {_pm(r, 'brew_matching', 1, 3)} | "
                   f"{_nfit(r, 'poisoned')} / {_nfit(r, 'uniform')} | {short_verdict(r)} |")
    return "\n".join(out) + "\n"


def report_markdown(rows: list[dict], out_dir: Path) -> str:
    """Per preset: mean ± 95% t-interval over seeds of test accuracy/loss, target accuracy and energy
    share for clean, poisoned and the two same-norm controls; paired differences; verdict; per-seed
    numbers; the clean-vs-poisoned scatter. Runs made by ``--sweep`` get one line each in a sweep
    table after these."""
    out_dir = Path(out_dir)
    swept = [r for r in rows if is_sweep_row(r)]
    rows = [r for r in rows if not is_sweep_row(r)]
    if not rows:
        return sweep_markdown(swept)
    out = ["Clean-label gradient-matching poisoning on digits (length-64 sequences). Mean ± 95% t-interval "
           "over seeds. `uniform`/`end`: random perturbations with each poison's matched ℓ2 norm, spread over "
           "the sequence / on its last quarter. Energy share = share of Σ|δ|² in the last quarter "
           "(uniform placement ≈ 0.25). Accuracies in %.\n"]
    out.append("| preset | variant | test acc | test loss | target acc | rest acc | energy share end | fits |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        star = " *" if r["overrides"] else ""
        for v in VARIANTS:
            nfit = _nfit(r, v)
            out.append(f"| {r['preset']}{star} | {v} | {_pm(r, f'{v}_test_acc', 100, 2)} | {_pm(r, f'{v}_test_loss')} | "
                       f"{_pm(r, f'{v}_target_acc', 100, 2)} | {_pm(r, f'{v}_rest_acc', 100, 2)} | "
                       f"{_pm(r, f'{v}_energy_share') if v != 'clean' else '-'} | {nfit} |")
    out.append("")
    out.append("Paired differences of test error (percentage points, poisoned minus other), brew matching loss "
               "M = 1 - cos (mean over groups), cost:\n")
    out.append("| preset | seeds | poisoned - clean | poisoned - uniform | poisoned - end | brew M | clean train s | brew s | wall s | verdict |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        star = " *" if r["overrides"] else ""
        wall = r.get("wall_seconds")
        out.append(f"| {r['preset']}{star} | {len(r['seeds'])} | {_pm(r, 'diff_err_poisoned_clean', 100, 2)} | "
                   f"{_pm(r, 'diff_err_poisoned_uniform', 100, 2)} | {_pm(r, 'diff_err_poisoned_end', 100, 2)} | "
                   f"{_pm(r, 'brew_matching')} | {r['clean_train_s_mean']:.1f} | {r['brew_s_mean']:.1f} | "
                   f"{'-' if wall is None else f'{wall:.0f}'} | {verdict(r)} |")
    out.append("")
    out.append("Per seed (test accuracy %, clean / poisoned / uniform / end; poisoned energy share):\n")
    out.append("| preset | seed | clean | poisoned | uniform | end | energy share | poisoned extra rounds |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for i, s in enumerate(r["seeds"]):
            acc = [100 * r[f"{v}_test_acc_per_seed"][i] for v in VARIANTS]
            out.append(f"| {r['preset']} | {s} | " + " | ".join(f"{a:.2f}" for a in acc) +
                       f" | {r['poisoned_energy_share_per_seed'][i]:.3f} | {int(r['poisoned_rounds_per_seed'][i])} |")
    elsewhere = sorted({r["backend"] for r in rows + swept} - {"cpu: cpu"})
    if elsewhere:
        out.append("\nRuns not made on a CPU (float results differ slightly between backends and, on a GPU, between "
                   "runs; compare variants within a run): " + "; ".join(
                       f"{b}: " + ", ".join(r["preset"] for r in rows + swept if r["backend"] == b) for b in elsewhere))
    if any(r["overrides"] for r in rows):
        out.append("\n\\* overrides of the preset: " + "; ".join(f"{r['preset']}: {r['overrides']}" for r in rows if r["overrides"]))
    fig = _figure(rows, out_dir)
    if fig is not None:
        out.append(f"\n![clean vs poisoned test error per seed]({fig.relative_to(out_dir).as_posix()})\n")
    if swept:
        out.append("\n" + sweep_markdown(swept))
    return "\n".join(out) + "\n"
