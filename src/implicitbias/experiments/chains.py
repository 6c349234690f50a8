"""Chain identification: outcome-based RL teaches a one-layer transformer to traverse chains, but
only with simple examples in the training data (SPEC §5; companion result, Ran-Milo, Alexander,
Mendel, Cohen 2026). The pieces (task, model, sampling, checkers, REINFORCE) are in
:mod:`implicitbias.tasks.chains`; this module is the experiment: the config, the talk's six rows as
presets (their numbers in :data:`TALK`) and ``run``; the report section is :mod:`implicitbias.report.chains`.

A row with complexities ``1..c`` uses two chains of ``n = c + 1`` vertices each (``train_chain_len``
/ ``test_chain_len`` override it). ``Config`` fields (default):

* ``n_vertices`` (24): vertex labels, redrawn per example; ``N + N^2`` tokens (vertices, then edges);
* ``trace_factor`` (2): at most ``ceil(trace_factor (n-1))`` emitted tokens; the answer is the first
  emitted vertex with no outgoing edge in the prompt (no answer: reward 0);
* ``sigma`` (``"softmax"``; ``"identity"`` is linear): ``H = sigma(Mask(X A X^T)) X V``;
* ``value_kind`` / ``value_scale`` (``"head"``, 10): fixed ``V``, edge ``(u, w)`` -> ``value_scale e_w``
  (``"endpoints"``: ``value_scale (e_u + e_w)``), vertex tokens -> 0;
* ``parameterisation`` (``"tied"``): five numbers, one per relation of query vertex to key token;
  ``"full"`` trains the whole ``(N, D)`` table; only ``A`` is trained;
* ``forward_bias`` (0.5): relabelling-symmetric init, this value on the "edge leaving the query" entry;
* ``optimizer`` (``"sgd"``; ``"adam"``), ``lr`` (1.0), ``batch`` (128 episodes), ``baseline``
  (``"loo"``: leave-one-out mean reward; ``"none"``), ``steps`` (1500), ``dtype`` (``"float32"``);
* ``n_eval`` (1000): fresh instances per test complexity, traces sampled (not greedy); seeds (0, 1, 2).

Why each default, the results with them and the sensitivity study: docs/findings/chains.md.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..record import Record
from ..stats import mean_std
from ..tasks import chains as ch
from ..validate import require, require_seeds

NAME = "chains"


@dataclass(frozen=True)
class Config:
    """One row of the table: a training distribution, a test set, and every open choice."""

    train_complexities: tuple[int, ...]
    test_complexities: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    train_weights: tuple[float, ...] = ()  # empty: uniform over train_complexities
    train_chain_len: int = 0  # 0: max(train_complexities) + 1
    test_chain_len: int = 0  # 0: max(test_complexities) + 1
    n_vertices: int = 24
    trace_factor: float = 2.0
    parameterisation: Literal["tied", "full"] = "tied"
    forward_bias: float = 0.5
    value_kind: Literal["head", "endpoints"] = "head"
    value_scale: float = 10.0
    sigma: Literal["softmax", "identity"] = "softmax"
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 1.0
    baseline: Literal["loo", "none"] = "loo"
    batch: int = 128
    steps: int = 1500
    n_eval: int = 1000
    dtype: Literal["float32", "float64"] = "float32"
    curve_points: int = 300  # learning-curve points kept in the report rows

    def __post_init__(self):
        for name in ("train_complexities", "test_complexities"):
            cs = getattr(self, name)
            require(len(cs) > 0, f"{name} must not be empty")
            require(all(isinstance(c, int) and c >= 1 for c in cs), f"{name} must be integers >= 1, got {cs}")
            require(len(set(cs)) == len(cs), f"{name} must not repeat values, got {cs}")
        require_seeds(self.seeds)
        require(all(s < 2**32 for s in self.seeds), f"seeds must be integers in 0..2^32-1, got {self.seeds}")
        if self.train_weights:
            require(
                len(self.train_weights) == len(self.train_complexities),
                f"train_weights must have one weight per train complexity ({len(self.train_complexities)}), "
                f"got {self.train_weights}",
            )
            require(
                all(math.isfinite(w) and w >= 0 for w in self.train_weights) and sum(self.train_weights) > 0,
                f"train_weights must be finite, >= 0 and not all 0, got {self.train_weights}",
            )
        require(
            self.train_chain_len == 0 or self.train_chain_len > max(self.train_complexities),
            f"train_chain_len must be 0 (auto) or > max(train_complexities) = {max(self.train_complexities)}, "
            f"got {self.train_chain_len}",
        )
        require(
            self.test_chain_len == 0 or self.test_chain_len > max(self.test_complexities),
            f"test_chain_len must be 0 (auto) or > max(test_complexities) = {max(self.test_complexities)}, "
            f"got {self.test_chain_len}",
        )
        n_max = max(self.chain_len("train"), self.chain_len("test"))
        require(
            self.n_vertices >= 2 * n_max, f"n_vertices must be >= 2 * chain length = {2 * n_max}, got {self.n_vertices}"
        )
        require(self.n_vertices <= 64, f"n_vertices must be <= 64 (the vocabulary grows as N^2), got {self.n_vertices}")
        require(
            math.isfinite(self.trace_factor) and self.trace_factor >= 1,
            f"trace_factor must be >= 1 (room for the forward walk), got {self.trace_factor}",
        )
        require(
            self.parameterisation in ("tied", "full"),
            f"parameterisation must be 'tied' or 'full', got {self.parameterisation!r}",
        )
        require(math.isfinite(self.forward_bias), f"forward_bias must be finite, got {self.forward_bias}")
        require(
            self.value_kind in ("head", "endpoints"),
            f"value_kind must be 'head' or 'endpoints', got {self.value_kind!r}",
        )
        require(
            math.isfinite(self.value_scale) and self.value_scale > 0, f"value_scale must be > 0, got {self.value_scale}"
        )
        require(self.sigma in ("softmax", "identity"), f"sigma must be 'softmax' or 'identity', got {self.sigma!r}")
        require(self.optimizer in ("sgd", "adam"), f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        require(math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.baseline in ("loo", "none"), f"baseline must be 'loo' or 'none', got {self.baseline!r}")
        require(self.batch >= 2, f"batch must be >= 2 (the leave-one-out baseline), got {self.batch}")
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.n_eval >= 1, f"n_eval must be >= 1, got {self.n_eval}")
        require(self.dtype in ("float32", "float64"), f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        require(self.curve_points >= 2, f"curve_points must be >= 2, got {self.curve_points}")

    def chain_len(self, which: str) -> int:
        """Vertices per chain for ``"train"`` or ``"test"``."""
        n = self.train_chain_len if which == "train" else self.test_chain_len
        cs = self.train_complexities if which == "train" else self.test_complexities
        return n or max(cs) + 1

    def spec(self) -> ch.Spec:
        """The static part of the run (every field but seeds, weights and report sizes): one
        compilation per spec, shared by configs that differ only in those."""
        names = {f.name for f in dataclasses.fields(ch.Spec)} - {"train_chain_len", "test_chain_len"}
        return ch.Spec(
            **{n: getattr(self, n) for n in names},
            train_chain_len=self.chain_len("train"),
            test_chain_len=self.chain_len("test"),
        )


def _r(a: int, b: int) -> tuple[int, ...]:
    return tuple(range(a, b + 1))


PRESETS: dict[str, Config] = {
    "train1-3/test1-3": Config(train_complexities=_r(1, 3), test_complexities=_r(1, 3)),
    "train1-7/test1-7": Config(train_complexities=_r(1, 7), test_complexities=_r(1, 7)),
    "train1-11/test1-11": Config(train_complexities=_r(1, 11), test_complexities=_r(1, 11)),
    "train1-3/test1-11": Config(train_complexities=_r(1, 3), test_complexities=_r(1, 11)),
    "train1-3/test3": Config(train_complexities=_r(1, 3), test_complexities=(3,)),
    "train3/test3": Config(train_complexities=(3,), test_complexities=(3,)),
}

# The talk's numbers per row: (accuracy, share of chain-traversal trajectories).
TALK = {
    "train1-3/test1-3": (1.00, 1.00),
    "train1-7/test1-7": (1.00, 0.99),
    "train1-11/test1-11": (0.99, 0.94),
    "train1-3/test1-11": (1.00, 1.00),
    "train1-3/test3": (1.00, 1.00),
    "train3/test3": (0.64, 0.01),
}


def run(config: Config) -> Record:
    """Train every seed (one vmapped, compiled program) and evaluate per test complexity."""
    start = time.perf_counter()
    spec = config.spec()
    params, curves, evals = ch.train_and_evaluate(spec, tuple(config.seeds), config.train_weights or None)
    acc = np.asarray(evals["accuracy"], float)  # (seeds, n_test_complexities)
    trav = np.asarray(evals["traversal"], float)
    reward = np.asarray(curves["reward"], float)  # (seeds, steps)
    traversal_curve = np.asarray(curves["traversal"], float)
    acc_seed, trav_seed = acc.mean(axis=1), trav.mean(axis=1)
    am, asd = mean_std(acc_seed)
    tm, tsd = mean_std(trav_seed)
    metrics = {
        "accuracy_mean": am,
        "accuracy_std": asd,
        "traversal_mean": tm,
        "traversal_std": tsd,
        "seeds": list(config.seeds),
        "accuracy": acc_seed.tolist(),
        "traversal": trav_seed.tolist(),
        "test_complexities": list(config.test_complexities),
        "accuracy_per_complexity": acc.tolist(),
        "traversal_per_complexity": trav.tolist(),
        "final_train_reward": reward[:, -100:].mean(axis=1).tolist(),
        "final_train_traversal": traversal_curve[:, -100:].mean(axis=1).tolist(),
        "steps_to_reward_0.9": ch.steps_to_reward(reward, 0.9),
        "steps": config.steps,
        "train_chain_len": config.chain_len("train"),
        "test_chain_len": config.chain_len("test"),
    }
    arrays = {"reward": reward, "traversal": traversal_curve, "accuracy": acc, "traversal_rate": trav}
    if "theta" in params:
        theta = np.asarray(params["theta"], float)
        metrics["theta"] = {name: theta[:, i].tolist() for i, name in enumerate(ch.RELATIONS)}
        arrays["theta"] = theta
    else:
        arrays["A"] = np.asarray(params["A"], float)
    metrics["compute_seconds"] = time.perf_counter() - start
    return Record(metrics, arrays)
from ..footprint import chains as footprint_bytes  # noqa: E402, F401  (the memory estimate; see footprint.check)
