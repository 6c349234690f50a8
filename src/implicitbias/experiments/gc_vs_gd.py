"""Guess & Check vs gradient descent in matrix sensing (docs/science.md §5; Alexander, Slutzky, Ran-Milo, Cohen,
*Do Neural Networks Need Gradient Descent to Generalize?*, arXiv 2506.03931). The task (problem,
network, sampler, GD) is :mod:`implicitbias.tasks.matrix_sensing`, whose docstring cites the authors'
files for every detail; the report section is :mod:`implicitbias.report.gc_vs_gd`.

One run = one point of a sweep (one width and depth) for all seeds: G&C draws ``samples`` networks
per seed from the prior (the same ``samples`` for every seed) and keeps those with training loss
``< eps_train``; GD trains the same network from a near-zero init on the same measurements.

Presets (the authors' configs in ``configs/width`` and ``configs/depth``, except the sample count):

* ``width/<w>``, ``w`` in 5 10 20 40 80 160: depth 2, rank-1 5x5 ground truth, 15 measurements,
  linear, Gaussian prior, unnormalised, ``eps_train = 0.02``; GD = GroupRMSprop, lr 1e-4, 1e5 epochs,
  init scale 1e-3. **samples = 200,000 per seed** (theirs: 1e8), sized so the sweep of 8 seeds runs in
  about 10 minutes on the 2-core CPU this was written on (docs/findings/gc_vs_gd.md).
* ``depth/<d>``, ``d`` in 2..10: width 5, ``eps_train = 0.0035``, normalised samples; GD lr 0.01,
  2e4 epochs, init scale 1e-3 (depth 2-4), 0.1 (5-8), 0.2 (9-10). **samples = 400,000 per seed**
  (theirs: 1e9).
* ``width-tanh``, ``width-leaky_relu``, ``depth-tanh``, ``depth-leaky_relu``: the same with the
  activation (LeakyReLU slope 0.2); ``width-rank2``, ``depth-rank2``: rank-2 ground truth with 22
  measurements (depth: ``eps_train = 0.01``, 5e4 GD epochs), as their ``gt_rank=2`` configs.

For the authors' budgets set ``--set samples=100000000`` (width) or ``--set samples=1000000000``
(depth). ``gd_optimizer=gd`` trains with plain gradient descent instead of their GroupRMSprop (give
it its own ``gd_lr``); the tables use GroupRMSprop, the authors' "GD".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import jax
import numpy as np

from ..record import Record
from ..tasks import matrix_sensing as ms
from ..core.validate import described, require, require_choices, require_finite, require_seeds

NAME = "gc_vs_gd"


@dataclass(frozen=True)
class Config:
    """One sweep point: the problem, the network, the G&C budget and GD's schedule."""

    width: int = field(metadata={"help": "hidden width of the factorised network (integer >= 1)"})
    depth: int = field(metadata={"help": "number of weight matrices (layers) of the network (integer >= 2)"})
    seeds: tuple[int, ...] = described(
        (0, 1, 2, 3, 4, 5, 6, 7), "seeds, one problem (ground truth, measurements) and one G&C and GD run each")
    n_rows: int = described(5, "rows of the ground-truth matrix W*")
    n_cols: int = described(5, "columns of the ground-truth matrix W*")
    rank: int = described(1, "rank of the ground-truth matrix W* (<= min(n_rows, n_cols))")
    n_measurements: int = described(
        15, "number of unit-norm Gaussian measurements <A_i, W*> (< n_rows * n_cols)")
    gt_norm: float = described(1.0, "Frobenius norm of the ground-truth matrix W*")
    activation: Literal["linear", "tanh", "leaky_relu"] = described(
        "linear", "activation between layers (none after the last): 'linear', 'tanh' or 'leaky_relu'")
    negative_slope: float = described(0.2, "slope of leaky_relu for negative inputs")
    prior: Literal["gauss", "unif"] = described(
        "gauss", "G&C prior of the weight entries: 'gauss' (N(0, 1)) or 'unif' (U[-1, 1]), scaled by fan-out")
    normalize: bool = described(False, "G&C divides the network's output matrix Y by ||Y||_F + softening")
    softening: float = described(1e-6, "added to ||Y||_F when normalize is on (>= 0)")
    eps_train: float = described(0.02, "G&C accepts a sample whose training loss is < eps_train")
    samples: int = described(200_000, "G&C draws from the prior per seed (1..2^32-1)")
    chunk: int = described(
        0, "G&C draws per compiled call, a multiple of 1024 (memory bound; numbers do not depend on it); "
           "0: ~32 MB of draws")
    gd_optimizer: Literal["group_rmsprop", "gd"] = described(
        "group_rmsprop", "GD's optimiser: 'group_rmsprop' (the authors' GroupRMSprop) or 'gd' (plain gradient descent)")
    gd_lr: float = described(1e-4, "GD's learning rate")
    gd_epochs: int = described(100_000, "GD's full-batch training epochs")
    gd_init_scale: float = described(1e-3, "factor on PyTorch's default nn.Linear initialisation of GD's weights")
    gd_log_every: int = described(100, "epochs between the logged GD losses (the curves)")

    def __post_init__(self):
        require_choices(self)
        require_seeds(self.seeds)
        require(all(s < 2**32 for s in self.seeds), f"seeds must be integers in 0..2^32-1, got {self.seeds}")
        for name in ("width", "n_rows", "n_cols", "rank", "n_measurements", "gd_epochs", "gd_log_every"):
            v = getattr(self, name)
            require(type(v) is int and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        require(type(self.depth) is int and self.depth >= 2, f"depth must be an integer >= 2, got {self.depth!r}")
        require(self.rank <= min(self.n_rows, self.n_cols),
                f"rank must be <= min(n_rows, n_cols) = {min(self.n_rows, self.n_cols)}, got {self.rank}")
        require(self.n_measurements < self.n_rows * self.n_cols,
                f"n_measurements must be < n_rows * n_cols = {self.n_rows * self.n_cols} (the generalisation "
                f"loss lives on the complement), got {self.n_measurements}")
        require(type(self.normalize) is bool, f"normalize must be true or false, got {self.normalize!r}")
        for name in ("gt_norm", "negative_slope", "softening", "eps_train", "gd_lr", "gd_init_scale"):
            require_finite(name, getattr(self, name))
        for name in ("gt_norm", "eps_train", "gd_lr", "gd_init_scale"):
            require(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        require(self.softening >= 0, f"softening must be >= 0, got {self.softening}")
        require(type(self.samples) is int and 1 <= self.samples < 2**32,
                f"samples must be an integer in 1..2^32-1 (sample indices are folded into the key), "
                f"got {self.samples!r}")
        require(type(self.chunk) is int and self.chunk >= 0 and self.chunk % ms.BLOCK == 0,
                f"chunk must be 0 (auto) or a positive multiple of {ms.BLOCK}, got {self.chunk!r}")

    def gc_spec(self) -> ms.GCSpec:
        return ms.GCSpec(self.n_rows, self.n_cols, self.width, self.depth, self.activation, self.negative_slope,
                         self.prior, self.normalize, self.softening, self.eps_train)


WIDTHS = (5, 10, 20, 40, 80, 160)
DEPTHS = tuple(range(2, 11))
DEPTH_INIT_SCALE = {2: 1e-3, 3: 1e-3, 4: 1e-3, 5: 0.1, 6: 0.1, 7: 0.1, 8: 0.1, 9: 0.2, 10: 0.2}  # configs/depth/*


def _width(w: int, **kw) -> Config:
    return Config(width=w, depth=2, eps_train=0.02, samples=200_000, gd_lr=1e-4, gd_epochs=100_000,
                  gd_init_scale=1e-3, **kw)


def _depth(d: int, **kw) -> Config:
    base = dict(eps_train=0.0035, gd_epochs=20_000)
    base.update(kw)
    return Config(width=5, depth=d, normalize=True, samples=400_000, gd_lr=0.01, gd_init_scale=DEPTH_INIT_SCALE[d],
                  **base)


_VARIANTS = {"": {}, "-tanh": {"activation": "tanh"}, "-leaky_relu": {"activation": "leaky_relu"},
             "-rank2": {"rank": 2, "n_measurements": 22}}
_DEPTH_RANK2 = {"eps_train": 0.01, "gd_epochs": 50_000}  # configs/depth/depth_gt_rank=2_*

PRESETS: dict[str, Config] = {
    **{f"width{v}/{w}": _width(w, **kw) for v, kw in _VARIANTS.items() for w in WIDTHS},
    **{f"depth{v}/{d}": _depth(d, **kw, **(_DEPTH_RANK2 if v == "-rank2" else {})) for v, kw in _VARIANTS.items()
       for d in DEPTHS},
}


def _per_seed_mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if x.size else None


def _none_nan(x: np.ndarray) -> list:
    return [float(v) if np.isfinite(v) else None for v in x]


def run(config: Config) -> Record:
    """G&C for every seed (compiled chunks, one seed after another), then GD for all seeds in one
    compiled loop. ``gc_error``/``gd_error``/``chance``: means over seeds (G&C over seeds with at
    least one accepted sample); per-seed lists beside them."""
    start = time.perf_counter()
    seeds = list(config.seeds)
    problems = [ms.make_problem(s, config.n_rows, config.n_cols, config.rank, config.n_measurements, config.gt_norm)
                for s in seeds]
    root = [jax.random.PRNGKey(s) for s in seeds]
    gc = ms.guess_and_check([jax.random.fold_in(k, 2) for k in root], problems, config.gc_spec(), config.samples,
                            config.chunk)
    gc_seconds = time.perf_counter() - start
    t0 = time.perf_counter()
    shapes = ms.layer_shapes(config.n_rows, config.n_cols, config.width, config.depth)
    gd = ms.gradient_descent([jax.random.fold_in(k, 3) for k in root], problems, shapes, config.activation,
                             config.negative_slope, config.gd_init_scale, config.gd_optimizer, config.gd_lr,
                             config.gd_epochs, config.gd_log_every)
    gd_seconds = time.perf_counter() - t0
    ok = ~gd.diverged
    metrics = {
        "width": config.width,
        "depth": config.depth,
        "seeds": seeds,
        "samples": config.samples,
        "eps_train": config.eps_train,
        "gc_error": _per_seed_mean(gc.gen_mean),
        "gc_seeds_with_accepts": int(np.sum(gc.accepted > 0)),
        "gd_error": float(np.mean(gd.gen[ok])) if ok.any() else None,
        "chance": float(np.mean(gc.chance)),
        "accepted": gc.accepted.tolist(),
        "gc_error_per_seed": _none_nan(gc.gen_mean),
        "gc_error_std_within_seed": _none_nan(gc.gen_std),
        "gc_min_train_loss": gc.min_train.tolist(),
        "chance_per_seed": gc.chance.tolist(),
        "gd_error_per_seed": _none_nan(gd.gen),
        "gd_train_loss_per_seed": _none_nan(gd.train),
        "gd_diverged": gd.diverged.tolist(),
        "gd_optimizer": config.gd_optimizer,
        "gc_seconds": gc_seconds,
        "gc_samples_per_second": config.samples * len(seeds) / gc_seconds,
        "gd_seconds": gd_seconds,
        "compute_seconds": time.perf_counter() - start,
    }
    arrays = {"gd_log_steps": gd.log_steps, "gd_gen_curve": gd.gen_curve, "gd_train_curve": gd.train_curve,
              "gc_accepted": gc.accepted, "gc_error": gc.gen_mean, "chance": gc.chance}
    return Record(metrics, arrays)


def footprint_terms(c: Config) -> dict[str, int]:
    """The largest arrays of a run (:mod:`implicitbias.runtime.footprint`'s hook; a lower bound): one block of
    G&C draws with the layer outputs of its networks, and GD's parameters, gradients, optimiser state
    and logged curves for every seed."""
    spec = c.gc_spec()
    S, f8 = len(c.seeds), 8
    rows = -(-c.gd_epochs // c.gd_log_every) + 1
    return {
        f"G&C draws and layer outputs of one block of {ms.BLOCK} networks, {spec.n_params} weights each":
            ms.BLOCK * (spec.n_params + c.depth * c.n_rows * c.width) * f8,
        f"GD weights, gradients and updates, {spec.n_params} weights x {S} seeds": 3 * S * spec.n_params * f8,
        f"GD curves of {rows} rows (gd_epochs / gd_log_every) x {S} seeds": S * rows * (2 * f8 + 4),
    }


def footprint_bytes(config: Config) -> int:
    """Bytes the largest arrays of a run of ``config`` take (see :func:`footprint_terms`)."""
    return int(sum(footprint_terms(config).values()))

