"""Real-world clean-label poisoning of S4D, LRU and Mamba2 digit classifiers (SPEC §4, issue #4).

Per seed ``s`` (everything seeded by ``s``):
1. data: ``n_train`` examples in a stratified split drawn with ``s`` (digits: length-64 row-major
   sequences), standardised with train-only statistics;
2. clean run: ``make_classifier(model_config, s)`` (the initialisation, kept), AdamW/cosine for
   ``epochs``, minibatch order from ``PRNGKey(s)``;
3. targets: ``n_targets`` test examples drawn with ``s``; they stay in the test set (``rest``: the others);
4. brew: ``round(poison_frac * n_train)`` random training rows, split among ``target_groups`` groups
   (:func:`implicitbias.poison.allocate_groups`), each matched separately against the clean model
   (untargeted, cosine over all parameters, sign-Adam, step decay, ``restarts``, ℓ∞ projection,
   optional end penalty ``penalty``/``penalty_power``);
5. variants, retrained from the same initialisation and minibatch key (``mode``: ``duplicate`` =
   clean set + perturbed copies, ``replace`` = in place; labels kept), plus up to ``max_rounds``
   rounds of ``extra_epochs`` at ``lr / 10`` while the training loss is above the clean model's:
   ``poisoned`` (matched), ``uniform`` (``U[-1,1]`` direction at each poison's matched ℓ2 norm),
   ``end`` (the same on the last ``ceil(last_frac * L)`` positions).

``eps`` is in raw pixel units (digits 0..16: ``eps=4`` is 64/255 of the range; CIFAR-10 0..1:
8/255 is ``eps=0.0314``); the model-unit budget is ``eps / max(std)`` (exact with one channel and
``standardize="channel"``). ``clip=True`` keeps perturbed pixels in the raw range per channel.
``dataset``: ``"digits"`` (scikit-learn) or ``"cifar10"`` (1,024 steps x 3 channels, ``scan`` ``row`` |
``channel_major``, from ``data_dir``; never downloaded). Presets ``<s4d|lru|mamba2>/digits/<mean|last>``:
the ``Config`` defaults; ``--sweep`` varies the levers (``scripts/sweep_realworld.py``).
Cost of the presets and what the sweep found: docs/findings/realworld.md.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..datasets import load_cifar10, load_digits
from ..models import ClassifierConfig, make_classifier
from ..poison import (
    BrewConfig,
    allocate_groups,
    assemble,
    craft_groups,
    energy_share,
    matching_loss,
    retrain,
    target_stats,
)
from ..poison.controls import same_norm_random
from ..poison.groups import classifier_direction, masked_direction
from ..record import Record
from ..train_classifier import TrainConfig, classification_loss, evaluate, predict_logits, trainer
from ..validate import require, require_seeds

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
            require(
                isinstance(v, int) and not isinstance(v, bool) and v > 0,
                f"{name} must be a positive integer, got {v!r}",
            )
        require(
            isinstance(self.max_rounds, int) and self.max_rounds >= 0,
            f"max_rounds must be an integer >= 0, got {self.max_rounds!r}",
        )
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.brew_lr > 0, f"brew_lr must be > 0, got {self.brew_lr}")
        require(self.dataset in RAW_RANGES, f"dataset must be one of {', '.join(RAW_RANGES)}, got {self.dataset!r}")
        if self.dataset == "digits":
            require(
                isinstance(self.n_train, int) and 20 <= self.n_train <= 1700,
                f"n_train must be an integer in [20, 1700], got {self.n_train!r}",
            )
            require(
                self.n_targets <= 1797 - self.n_train,
                f"n_targets must be <= the test set size {1797 - self.n_train}, got {self.n_targets}",
            )
        else:
            require(
                bool(self.data_dir),
                "dataset=cifar10 needs data_dir (the unpacked CIFAR-10 python batches; never downloaded)",
            )
            require(self.scan in ("row", "channel_major"), f"scan must be 'row' or 'channel_major', got {self.scan!r}")
            require(
                isinstance(self.n_train, int) and 20 <= self.n_train <= 50_000,
                f"n_train must be an integer in [20, 50000], got {self.n_train!r}",
            )
            require(
                isinstance(self.n_test, int) and 0 <= self.n_test <= 10_000,
                f"n_test must be an integer in [0, 10000], got {self.n_test!r}",
            )
            require(
                self.n_targets <= (self.n_test or 10_000),
                f"n_targets must be <= the test set size, got {self.n_targets}",
            )
        require(
            self.standardize in ("channel", "feature"),
            f"standardize must be 'channel' or 'feature', got {self.standardize!r}",
        )
        require(
            not (self.clip and self.standardize != "channel"),
            "clip=True needs standardize='channel' (a per-channel pixel range)",
        )
        raw = RAW_RANGES.get(self.dataset, RAW_RANGE)
        hint = " (pixels scaled to 0..1: the paper's 8/255 is eps=0.0314)" if self.dataset == "cifar10" else ""
        require(
            0 < self.eps <= raw, f"eps must be in (0, {raw}] raw pixel units for {self.dataset}{hint}, got {self.eps}"
        )
        require(0 < self.poison_frac <= 1, f"poison_frac must be in (0, 1], got {self.poison_frac}")
        require(round(self.poison_frac * self.n_train) >= 1, "poison_frac * n_train must give at least one poison")
        require(self.penalty >= 0, f"penalty must be >= 0, got {self.penalty}")
        require(self.penalty_power > 0, f"penalty_power must be > 0, got {self.penalty_power}")
        require(self.mode in ("duplicate", "replace"), f"mode must be 'duplicate' or 'replace', got {self.mode!r}")
        require(0 < self.last_frac <= 1, f"last_frac must be in (0, 1], got {self.last_frac}")
        require_seeds(self.seeds)
        require(len(set(self.seeds)) == len(self.seeds), f"seeds must be distinct, got {self.seeds}")

    @property
    def model_config(self) -> ClassifierConfig:
        return ClassifierConfig(
            kind=self.model,
            d_input=3 if self.dataset == "cifar10" else 1,
            n_classes=10,
            d_model=self.d_model,
            d_state=self.d_state,
            n_layers=self.n_layers,
            readout=self.readout,
            norm=self.norm,
        )

    def load(self, seed: int):
        """The data set of one seed: digits with a stratified split drawn with ``seed``; CIFAR-10 from
        ``data_dir`` (its first ``n_train`` training images and first ``n_test`` test images, the same
        for every seed: the seed then draws the initialisation, targets, poisons and batches)."""
        if self.dataset == "digits":
            return load_digits(n_train=self.n_train, seed=seed, scan="row", standardize=self.standardize)
        return load_cifar10(
            self.data_dir,
            scan=self.scan,
            standardize=self.standardize,
            n_train=self.n_train,
            n_test=self.n_test or None,
        )

    @property
    def n_poisons(self) -> int:
        return int(round(self.poison_frac * self.n_train))


_SMALL = Config()
PRESETS: dict[str, Config] = {
    f"{model}/digits/{readout}": replace(_SMALL, model=model, readout=readout)
    for model in ("s4d", "lru", "mamba2")
    for readout in ("mean", "last")
}


# --------------------------------------------------------------------------------------------
# one seed
# --------------------------------------------------------------------------------------------


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


_matching_jit = eqx.filter_jit(matching_loss)


def run_seed(cfg: Config, seed: int, keep: bool = False) -> dict:
    """Clean run, brew, controls and retraining for one seed. With ``keep`` the returned dict also
    holds ``"models"`` (trained models per variant), ``"inits"`` (the model each variant's
    training started from), ``"data"`` and ``"sets"`` (the assembled training sets) for tests."""
    ds = cfg.load(seed)
    x, y, xt, yt = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    require(
        cfg.n_targets <= xt.shape[0],
        f"n_targets={cfg.n_targets} but the {cfg.dataset} test set holds only {xt.shape[0]} examples",
    )
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
    bc = BrewConfig(
        eps=eps_m,
        iterations=cfg.iterations,
        restarts=cfg.restarts,
        lr=cfg.brew_lr,
        penalty=cfg.penalty,
        penalty_power=cfg.penalty_power,
        clip_min=cmin,
        clip_max=cmax,
    )
    predict = lambda m, xx: jnp.asarray(predict_logits(m, np.asarray(xx)))
    t_losses, t_correct = target_stats(clean.model, x_t, y_t, predict)
    groups = allocate_groups(t_losses, t_correct, cfg.n_poisons, seed=seed, n_groups=cfg.target_groups)
    t0 = time.perf_counter()
    brew = craft_groups(
        clean.model,
        loss_only,
        x_pool,
        y_pool,
        x_t,
        y_t,
        groups,
        jax.random.fold_in(key, 1),
        bc,
        direction_fn=classifier_direction,
    )
    delta, brew_results = np.asarray(brew.delta), brew.results
    t_brew = time.perf_counter() - t0

    n_last = max(1, math.ceil(cfg.last_frac * L - 1e-9))
    ku, ke = jax.random.split(jax.random.fold_in(key, 2))
    deltas = {
        "poisoned": delta,
        "uniform": np.asarray(same_norm_random(ku, jnp.asarray(delta)), delta.dtype),
        "end": np.asarray(same_norm_random(ke, jnp.asarray(delta), slice(L - n_last, None)), delta.dtype),
    }

    def measure(model, x_fit, y_fit):
        tr = evaluate(model, x_fit, y_fit)
        trc = evaluate(model, x, y)
        te = evaluate(model, xt, yt)
        tg = evaluate(model, x_t, y_t)
        rs = evaluate(model, xt[rest_mask], yt[rest_mask])
        return {
            "train_loss": tr["loss"],
            "train_acc": tr["accuracy"],
            "clean_train_loss": trc["loss"],
            "clean_train_acc": trc["accuracy"],
            "test_loss": te["loss"],
            "test_acc": te["accuracy"],
            "target_loss": tg["loss"],
            "target_acc": tg["accuracy"],
            "rest_loss": rs["loss"],
            "rest_acc": rs["accuracy"],
        }

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
        r = retrain(
            init,
            np.asarray(ps.x),
            np.asarray(ps.y),
            train_fn,
            key,
            full_loss,
            target_loss=clean.train_loss,
            continue_fn=trainer(cc),
            max_rounds=cfg.max_rounds,
        )
        norms = np.sqrt((d.reshape(d.shape[0], -1) ** 2).sum(1))
        out[name] = {
            **measure(r.model, np.asarray(ps.x), np.asarray(ps.y)),
            "rounds": r.rounds,
            "fits": r.fits,
            "time_s": time.perf_counter() - t0,
            "energy_share": energy_share(d, cfg.last_frac),
            "l2_mean": float(norms.mean()),
            "linf": float(np.abs(d).max()),
            "matching_loss": float(
                _matching_jit(
                    jnp.asarray(d), clean.model, loss_only, jnp.asarray(x_pool), jnp.asarray(y_pool), direction
                )
            ),
        }
        models[name] = r.model
    out["brew"] = {
        "objective": [float(res.objective) for res in brew_results],
        "matching": [float(res.matching) for res in brew_results],
        "penalty": [float(res.penalty) for res in brew_results],
        "groups": [g.name for g in groups],
        "group_sizes": [[int(g.targets.size), int(g.poisons.size)] for g in groups],
        "objective_mean": float(np.mean([float(res.objective) for res in brew_results])),
        "matching_mean": float(np.mean([float(res.matching) for res in brew_results])),
    }
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
    per finished seed (logger ``implicitbias``; the CLI prints it under its progress bar).

    Recorded per seed and variant: train loss/accuracy on the set it was trained on and on the clean
    training set, test loss/accuracy (all, targets, rest), extra rounds and whether it fit, wall time;
    for perturbations: the share of ``sum |delta|^2`` in the last ``last_frac`` of the sequence, mean
    per-poison ℓ2 norm, max |delta| (model units), and the matching loss ``M`` at the clean model;
    the brew's objective/matching loss per group; times of clean training and brewing.
    """
    start = time.perf_counter()
    per = []
    for i, s in enumerate(config.seeds):
        t0 = time.perf_counter()
        per.append(run_seed(config, s))
        acc = "  ".join(f"{v} {100 * per[-1][v]['test_acc']:.2f}%" for v in VARIANTS)
        log.info(
            "realworld seed %d (%d/%d) done in %.0f s: test accuracy %s",
            s,
            i + 1,
            len(config.seeds),
            time.perf_counter() - t0,
            acc,
        )
    return collect(config, per, time.perf_counter() - start)


def collect(config: Config, per: list[dict], wall_seconds: float | None = None) -> Record:
    """The ``Record`` of a run from the per-seed dicts of :func:`run_seed` (in ``config.seeds`` order)."""
    metrics = {
        "seeds": list(config.seeds),
        "variants": list(VARIANTS),
        "n_poisons": config.n_poisons,
        "eps_model": [p["budget"]["eps_model"] for p in per],
    }
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
from ..footprint import realworld as footprint_bytes  # noqa: E402, F401  (the memory estimate; see footprint.check)
