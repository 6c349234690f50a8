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

import jax
import numpy as np

from ..core.precision import in_float64
from ..record import Record
from ..tasks import matrix_sensing as ms

NAME = "gc_vs_gd"


Config = ms.Config  # the config lives beside its task (implicitbias.tasks.matrix_sensing)


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


@in_float64
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
        "sampler": config.resolved_sampler,  # the stream actually drawn ('auto' resolved)
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


footprint_bytes = ms.footprint_bytes  # the memory estimate (runtime.footprint.check), beside its task
footprint_terms = ms.footprint_terms
