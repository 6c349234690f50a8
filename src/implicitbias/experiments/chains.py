"""Chain identification: outcome-based RL teaches a one-layer transformer to traverse chains, but
only with simple examples in the training data (docs/science.md §5; companion result, Ran-Milo, Alexander,
Mendel, Cohen 2026). The pieces (task, model, sampling, checkers, REINFORCE) are in
:mod:`implicitbias.tasks.chains`; this module is the experiment: the config, the presets (the talk's
six rows and the authors' committed runs), the numbers to compare with (:data:`TALK`,
:data:`AUTHORS_COMMITTED`) and ``run``; the report section is :mod:`implicitbias.report.chains`.

The defaults are the authors' ``theoretically_inspired/exp_train_on_D.py --softmax`` with
``run_exp_util.train_list_classifier``: their model (A and V trained, init N(0, 1e-8), softmax
attention, temperature 1/20), Adam lr 1e-2, REINFORCE with the sub-batch mean reward as baseline,
batches of 50,000 episodes in 30 sub-batches, 20 steps per epoch (their 1,000,000 training samples
/ 50,000), at most 300 epochs, early stop at 100% train and validation accuracy, greedy validation
and test on 1,000 instances, at most ``n + 1`` emitted tokens, seeds 42-44.

``Config`` fields (default):

* ``train_complexities`` / ``test_complexities``: distances from the source to its chain's end
  (their start index ``n - 1 - c``); ``train_weights`` (uniform);
* ``train_chain_len`` (0: ``max(train_complexities) + 1``), ``test_chain_lens`` (empty: one test
  chain length ``max(test_complexities) + 1``; each length tests the complexities below it);
* ``n_vertices`` (0: two chains' worth, ``2 max(chain lengths)``; larger leaves isolated vertices);
* ``model`` (``"full"``: the authors' ``(N, N^2)`` A and ``(N^2, N)`` V; ``"tied"``: five numbers each,
  per-relation rates so that its flow is the full model's, see :mod:`implicitbias.tasks.chains`);
* ``attention`` (``"softmax"``; ``"linear"``), ``temperature`` (0: 1/20 softmax, 1/5 linear);
* ``init_std`` (1e-8), ``optimizer`` (``"adam"``; ``"gd"``), ``lr`` (1e-2), ``baseline``
  (``"mean"``; ``"loo"``, ``"none"``);
* ``batch`` (50,000 episodes per step), ``sub_batches`` (30; the baseline is per sub-batch; every
  sub-batch has ``batch // sub_batches`` episodes, 1,666: 49,980 per step, where their last one
  takes the remainder),
  ``steps_per_epoch`` (20), ``epochs`` (300, at most), ``early_stop`` (True);
* ``max_new_tokens`` (0: ``train_chain_len + 1``; training and validation), ``test_max_new_tokens``
  (0: test chain length + 1), ``n_val`` (1000), ``n_eval`` (1000 per test chain length),
  ``dtype`` (``"float32"``).

Choices, results and wall times: docs/findings/chains.md.
"""

from __future__ import annotations

import time

import numpy as np

from ..core.precision import in_float64
from ..record import Record
from ..core.stats import mean_std
from ..tasks import chains as ch

NAME = "chains"


Config = ch.Config  # the config lives beside its task (implicitbias.tasks.chains)


def _r(a: int, b: int) -> tuple[int, ...]:
    return tuple(range(a, b + 1))


def _train_on_d(n: int, **kw) -> Config:
    """``exp_train_on_D`` at chain size ``n``: train and test on complexities 1..n-1, N = 2n."""
    return Config(train_complexities=_r(1, n - 1), test_complexities=_r(1, n - 1), **kw)


# The authors' linear budget in exp_train_on_D / _D_m: 2,000,000 samples in batches of 200,000
# (10 steps per epoch), 80 sub-batches, at most 200 epochs.
_LINEAR = dict(attention="linear", batch=200_000, sub_batches=80, steps_per_epoch=10, epochs=200)
# exp_train_on_D_m: train on chain 4 inside a 24-vertex graph (16 isolated vertices), 13 emitted
# tokens in training (max test chain + 1), test with 20; temperature 1/20 for both attentions.
_D_M = dict(train_complexities=_r(1, 3), test_complexities=_r(1, 11), test_chain_lens=(4, 8, 12), n_vertices=24,
            max_new_tokens=13, test_max_new_tokens=20, temperature=1 / 20)
# The CPU budget for chain 12 (see the preset list): a tenth of their batch, same sub-batch size.
_CPU12 = dict(batch=5_000, sub_batches=3, epochs=100)
# The complexity-3 rows (the talk's "train 1-3 / test 3" and "train 3 / test 3", their
# exp_vanish_grad at chain 4: start positions {0, 1, 2} vs {0}, tested at position 0): the same
# fixed budget for both, no early stop (as exp_vanish_grad), softmax defaults otherwise.
_C3 = dict(test_complexities=(3,), train_chain_len=4, early_stop=False, epochs=10)

PRESETS: dict[str, Config] = {
    # the talk's six rows, mapped to the authors' experiments
    "train1-3/test1-3": _train_on_d(4),  # exp_train_on_D, chain 4
    "train1-7/test1-7": _train_on_d(8),  # exp_train_on_D, chain 8
    "train1-11/test1-11": _train_on_d(12, **_CPU12),  # exp_train_on_D, chain 12 (CPU budget)
    "train1-3/test1-11": Config(**{**_D_M, "test_chain_lens": (12,)}),  # exp_train_on_D_m, test chain 12
    "train1-3/test3": Config(train_complexities=_r(1, 3), **_C3),  # exp_vanish_grad, k = 3
    "train3/test3": Config(train_complexities=(3,), **_C3),  # exp_vanish_grad, k = 1
    # the authors' committed runs (result/theoretically_inspired/exp_train_on_D[_linear]/)
    "authors/chain4": _train_on_d(4),
    "authors/chain8": _train_on_d(8),
    "authors/chain12": _train_on_d(12, **_CPU12),
    "authors/chain12-full": _train_on_d(12),  # their budget: for a GPU
    "authors/linear/chain4": _train_on_d(4, **_LINEAR),
    "authors/linear/chain8": _train_on_d(8, **_LINEAR),
    "authors/linear/chain12": _train_on_d(12, **_LINEAR),
    "authors/train4-test4-8-12": Config(**_D_M),  # exp_train_on_D_m --softmax
    "authors/linear/train4-test4-8-12": Config(**_D_M, **_LINEAR),
}
"""Presets. The talk's rows keep their names and run the authors' experiments. ``authors/chain12``
and ``train1-11/test1-11`` scale their budget for a 2-core CPU: 5,000 episodes per step in 3
sub-batches (their sub-batch size, 1,667, so the baseline is as noisy; 10 times fewer episodes per
step), 20 steps per epoch, at most 100 epochs (their 300), early stop as theirs (an epoch is then
100,000 episodes, so 100% train accuracy is judged on 10 times fewer episodes);
``authors/chain12-full`` is their budget. The linear presets are their budget (200,000 episodes per
step): GPU-sized. The complexity-3 rows run 10 epochs of 20 steps of 50,000 episodes without early
stop (their exp_vanish_grad runs 1,000 epochs)."""

# The talk's numbers per row, in percent: (accuracy, share of chain-traversal trajectories).
TALK = {
    "train1-3/test1-3": (100.0, 100.0),
    "train1-7/test1-7": (100.0, 99.0),
    "train1-11/test1-11": (99.0, 94.0),
    "train1-3/test1-11": (100.0, 100.0),
    "train1-3/test3": (100.0, 100.0),
    "train3/test3": (64.0, 1.0),
}

# The authors' committed results, copied as data: exp_train_on_D (train and test on chains of n,
# N = 2n), per attention and chain size, in percent, from
# result/theoretically_inspired/exp_train_on_D{,_linear}/results_aggregated.csv (mean, np.std over
# seeds 42-44) and .../seed_{42,43,44}/results_train_on_D.csv (per seed), repository
# YuvMilo/trans-rl-experiments, commit ec5ff38a7e7bcd5f01bc233491172d4133875ee6. Their
# exp_train_on_D_m and exp_vanish_grad results are committed only as pickles and figures.
AUTHORS_COMMITTED = {
    ("softmax", 4): {"test_accuracy": (100.0, 0.0, (100.0, 100.0, 100.0)),
                     "traversal": (100.0, 0.0, (100.0, 100.0, 100.0))},
    ("softmax", 8): {"test_accuracy": (100.0, 0.0, (100.0, 100.0, 100.0)),
                     "traversal": (98.87, 0.98, (100.0, 97.6, 99.0))},
    ("softmax", 12): {"test_accuracy": (98.59, 1.99, (100.0, 100.0, 95.77)),
                      "traversal": (93.2, 4.37, (95.4, 97.1, 87.1))},
    ("linear", 4): {"test_accuracy": (100.0, 0.0, (100.0, 100.0, 100.0)),
                    "traversal": (100.0, 0.0, (100.0, 100.0, 100.0))},
    ("linear", 8): {"test_accuracy": (100.0, 0.0, (100.0, 100.0, 100.0)),
                    "traversal": (99.5, 0.71, (100.0, 98.5, 100.0))},
    ("linear", 12): {"test_accuracy": (100.0, 0.0, (100.0, 100.0, 100.0)),
                     "traversal": (99.7, 0.22, (99.9, 99.4, 99.8))},
}
AUTHORS_SOURCE = ("YuvMilo/trans-rl-experiments@ec5ff38a7e7bcd5f01bc233491172d4133875ee6:"
                  "result/theoretically_inspired/exp_train_on_D{,_linear}/results_aggregated.csv")


def _task(config: Config, n: int) -> tuple:
    """What a test row measures, whatever the model and budget: (train complexities, train chain,
    test complexities, test chain, vertices)."""
    return (tuple(config.train_complexities), config.chain_len_train(), config.complexities_at(n), n,
            config.vertices())


def talk_row(config: Config, n: int) -> str | None:
    """The talk's row that the test on chains of ``n`` of ``config`` measures (None if none)."""
    for name in TALK:
        p = PRESETS[name]
        if _task(p, p.chain_lens_test()[-1]) == _task(config, n) and not config.train_weights:
            return name
    return None


def committed_key(config: Config, n: int) -> tuple[str, int] | None:
    """The key of :data:`AUTHORS_COMMITTED` that the test on chains of ``n`` measures (None if none)."""
    key = (config.attention, n)
    if key in AUTHORS_COMMITTED and _task(config, n) == _task(_train_on_d(n), n) and not config.train_weights:
        return key
    return None


def _pct(x) -> float | None:
    return None if not np.isfinite(x) else float(100.0 * x)


@in_float64
def run(config: Config) -> Record:
    """Train every seed (one vmapped, compiled program), then test each test chain length (greedy)."""
    start = time.perf_counter()
    spec = config.spec()
    params, curves, counts = ch.train_and_evaluate(spec, tuple(config.seeds), config.train_weights or None)
    cnt = {k: np.asarray(v, float) for k, v in counts.items()}  # (seeds, tests, width)
    valid = cnt["valid"].sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = cnt["correct"].sum(-1) / valid  # (seeds, tests)
        trav = cnt["traversal"].sum(-1) / valid
        acc_c = cnt["correct"] / cnt["valid"]
    epochs_run = np.asarray(curves["epochs_run"], int)
    tests = []
    for i, n in enumerate(spec.test_chain_lens):
        a, t = [_pct(x) for x in acc[:, i]], [_pct(x) for x in trav[:, i]]
        am, asd = mean_std([x if x is not None else np.nan for x in a])
        tm, tsd = mean_std([x if x is not None else np.nan for x in t])
        cs = spec.test_complexities[i]
        tests.append({
            "chain_size": n, "test_complexities": list(cs),
            "test_accuracy": a, "traversal": t,
            "test_accuracy_mean": _pct(am / 100), "test_accuracy_std": _pct(asd / 100),
            "traversal_mean": _pct(tm / 100), "traversal_std": _pct(tsd / 100),
            "valid_share": (valid[:, i] / spec.n_eval).tolist(),
            "accuracy_per_complexity": [[_pct(acc_c[s, i, c - 1]) for c in cs] for s in range(len(config.seeds))],
        })
    metrics = {
        "model": config.model, "attention": config.attention, "seeds": list(config.seeds),
        "n_vertices": spec.n_vertices, "train_chain_len": spec.train_chain_len,
        "tests": tests,
        "epochs_run": epochs_run.tolist(),
        "steps_run": (epochs_run * config.steps_per_epoch).tolist(),
        "episodes": (epochs_run * config.steps_per_epoch * config.batch).tolist(),
        "final_val_accuracy": [_pct(np.asarray(curves["val_accuracy"])[s, e - 1]) for s, e in enumerate(epochs_run)],
        "final_val_traversal": [_pct(np.asarray(curves["val_traversal"])[s, e - 1]) for s, e in enumerate(epochs_run)],
    }
    arrays = {k: np.asarray(curves[k], float) for k in ("train_accuracy", "val_accuracy", "val_traversal")}
    arrays.update({f"test_{k}": v for k, v in cnt.items()})
    arrays.update({k: np.asarray(v, float) for k, v in params.items()})
    metrics["compute_seconds"] = time.perf_counter() - start
    return Record(metrics, arrays)


footprint_bytes = ch.footprint_bytes  # the memory estimate (runtime.footprint.check), beside its task
footprint_terms = ch.footprint_terms
