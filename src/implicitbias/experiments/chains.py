"""Chain identification: outcome-based RL teaches a one-layer transformer to traverse chains, but
only with simple examples in the training data (SPEC §5; companion result, Ran-Milo, Alexander,
Mendel, Cohen 2026). The pieces (task, model, sampling, checkers, REINFORCE) are in
:mod:`implicitbias.chains`; this module is the experiment: configs, the talk's six rows as presets,
``run``, and the report section.

The talk's table (accuracy / share of chain-traversal trajectories)::

    train 1-3   test 1-3    100% / 100%
    train 1-7   test 1-7    100% /  99%
    train 1-11  test 1-11    99% /  94%
    train 1-3   test 1-11   100% / 100%
    train 1-3   test 3      100% / 100%
    train 3     test 3       64% /   1%

Chain lengths: a row with complexities ``1..c`` uses two chains of ``n = c + 1`` vertices each (so
``train 1-3`` trains on ``n = 4`` and ``test 1-11`` tests on ``n = 12``), as in the paper's
abstract-level description; ``train_chain_len`` / ``test_chain_len`` override it.

Choices the talk leaves open, each a ``Config`` field (default, and why):

* ``n_vertices = 24`` (vocabulary ``N`` vertex labels, ``N + N^2`` tokens): the smallest that holds
  the two 12-vertex chains of the longest test; labels are redrawn per example, so with ``n = 4``
  16 labels are absent from a training graph.
* Tokens: one token per directed edge ``(u, w)`` and one per vertex; the prompt is the shuffled
  edge tokens followed by the start vertex, no separators (the theory's edge tokens).
* Trace format: the model emits vertex tokens; the final answer is the first emitted vertex with no
  outgoing edge in the prompt (there the walk cannot continue), at most
  ``T = ceil(trace_factor (n-1))`` tokens, ``trace_factor = 2`` (room for detours; no answer
  within ``T`` is reward 0). Chain traversal = the emitted tokens are exactly the forward walk.
* Model: ``H = softmax(Mask(X A X^T)) X V`` (``sigma = "softmax"``; ``"identity"`` is the linear
  option); ``V`` fixed, edge ``(u, w)`` -> ``value_scale * e_w`` (``value_kind = "head"``), vertex
  tokens -> 0; ``value_scale = 10``: with ``sigma`` softmax the logits lie in ``[0, value_scale]``,
  and a forward step must beat ``N - 1 = 23`` other labels with probability > 0.99 for 11-step
  chains, which needs ``value_scale`` above ``log(23 * 100) = 7.7``. The notes' lead
  ``V[(u,w)] = e_u + e_w`` is ``value_kind = "endpoints"``: under this trace format it ties the
  forward step with repeating the current vertex, capping the forward probability at 1/2, so it is
  not the default.
* Parameterisation of ``A`` (only ``A`` is trained): ``"tied"`` (default), five numbers, one per
  relation of the query vertex to the key token (edge leaving it, edge entering it, other edge, the
  vertex itself, another vertex). Tied matrices are exactly the relabelling-invariant ones; since
  the task is relabelling-invariant, policy-gradient *flow* on the full table from a tied init stays
  tied, so this is the theory's full-``A`` dynamics without the sampling noise of ``N D`` entries.
  ``"full"`` trains the whole ``(N, D)`` table (rows of non-vertex queries are never used).
* Init: relabelling-symmetric with a weak forward bias, ``forward_bias = 0.5`` on the
  "edge leaving the query" entry, 0 elsewhere; at init a forward step has probability about 0.19
  on ``n = 4`` chains (stepping back/staying about 0.08).
* Optimiser: plain SGD on the REINFORCE estimate (the policy gradient the theory analyses; Adam
  rescales exponentially small gradients and removes the mechanism), ``lr = 1.0``, batch 128
  episodes per step, leave-one-out mean-reward baseline (unbiased).
* Step budget: ``steps = 1500`` for every row (the ``1-3`` rows reach reward 0.99 within about
  100 steps; the budget leaves room so the ``3``-only row is judged at the same, generous budget).
* ``float32``: rewards and probabilities need no more, and it halves the cost on a CPU.
* Evaluation: ``n_eval = 1000`` fresh instances per test complexity, traces sampled from the
  policy (not greedy), per seed; seeds ``(0, 1, 2)``.

Measured with the defaults (3 seeds, 1500 steps, mean ± std over seeds; 2-core CPU, full table
201 s with compile while other jobs kept the load average at 5-6):

* every row trained on ``1-c`` reaches >= 99.4% accuracy and >= 98.9% traversal on its test set;
  ``train 1-3 / test 1-11`` (chains of 4 -> chains of 12): 99.4 ± 0.0% / 98.9 ± 0.0%, worst test
  complexity (11) 98.9% / 97.9%;
* ``train 3 / test 3``: 25.6 ± 1.3% / 0.0 ± 0.0% (seeds 25, 24, 27%), against 99.6 ± 0.2% /
  99.5 ± 0.1% for ``train 1-3 / test 3``: a gap of 74 accuracy and 99.5 traversal points. It is a
  trap, not a slow start: still 25.7% / 0.0% after 6000 steps. The policy gradient first raises the
  attention on *all other* edges (their heads are the graph's vertices, so answers outside the
  graph get rarer) and lowers the forward entry; the forward-walk signal, about ``c p^(c-1)`` for
  forward probability ``p``, is too weak at ``c = 3`` to compete, and the model settles on jumping
  to random graph vertices (answer correct about 1 time in 4, never a traversal). The talk's row
  (64% / 1%) also shows a non-traversing shortcut; its accuracy is higher than ours.

Sensitivity (``--set``; investigated, not tuned into the defaults; 3 seeds, 1500 steps each):

* ``forward_bias``: 0.25 gives the same trap; at 0.75 and 1.0 (forward probability at init about
  0.3 and 0.4 instead of 0.19) training on complexity 3 only learns the traversal in ~50 steps,
  as fast as 1-3: **no gap at ``n = 4``**. At ``forward_bias = 1.0`` on longer chains the gap is
  back: ``train 7 / test 7`` (chains of 8) 72.1 ± 38.8% / 66.2 ± 46.8% (two seeds learn after
  ~200-300 steps, one is trapped at 17% / 0%) against 99.3% / 99.2% for ``train 1-7``; at the
  default bias ``train 7`` is trapped on all seeds (17.0 ± 0.9% / 0%). The threshold on the
  initial forward bias grows with the complexity, as the theory's exponentially small gradient
  says; the n=4 row of the talk sits close to it, so the row's outcome depends on the init.
* ``n_vertices = 8`` (no labels outside the training graph): no gap (99.9% on both rows): the
  labels outside the graph are what make the shortcut attractive at ``n = 4``.
* ``optimizer = "adam", lr = 0.05``: the same trap (25.7% / 0%) and the same 1-3 result.
* ``parameterisation = "full"`` at ``lr = 1``: even ``train 1-3`` barely moves in 1000 steps
  (reward 0.19 -> 0.3): each of the ``N D`` entries sees a gradient about ``N^2`` times smaller
  than the tied parameters; a learning rate for it was not searched.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import numpy as np

from .. import chains as ch
from .base import Record, base_preset, mean_std, require

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
        require(len(self.seeds) > 0, "seeds must not be empty")
        require(all(isinstance(s, int) and 0 <= s < 2**32 for s in self.seeds), f"seeds must be integers in 0..2^32-1, got {self.seeds}")
        if self.train_weights:
            require(len(self.train_weights) == len(self.train_complexities),
                    f"train_weights must have one weight per train complexity ({len(self.train_complexities)}), got {self.train_weights}")
            require(all(math.isfinite(w) and w >= 0 for w in self.train_weights) and sum(self.train_weights) > 0,
                    f"train_weights must be finite, >= 0 and not all 0, got {self.train_weights}")
        require(self.train_chain_len == 0 or self.train_chain_len > max(self.train_complexities),
                f"train_chain_len must be 0 (auto) or > max(train_complexities) = {max(self.train_complexities)}, got {self.train_chain_len}")
        require(self.test_chain_len == 0 or self.test_chain_len > max(self.test_complexities),
                f"test_chain_len must be 0 (auto) or > max(test_complexities) = {max(self.test_complexities)}, got {self.test_chain_len}")
        n_max = max(self.chain_len("train"), self.chain_len("test"))
        require(self.n_vertices >= 2 * n_max, f"n_vertices must be >= 2 * chain length = {2 * n_max}, got {self.n_vertices}")
        require(self.n_vertices <= 64, f"n_vertices must be <= 64 (the vocabulary grows as N^2), got {self.n_vertices}")
        require(math.isfinite(self.trace_factor) and self.trace_factor >= 1,
                f"trace_factor must be >= 1 (room for the forward walk), got {self.trace_factor}")
        require(self.parameterisation in ("tied", "full"), f"parameterisation must be 'tied' or 'full', got {self.parameterisation!r}")
        require(math.isfinite(self.forward_bias), f"forward_bias must be finite, got {self.forward_bias}")
        require(self.value_kind in ("head", "endpoints"), f"value_kind must be 'head' or 'endpoints', got {self.value_kind!r}")
        require(math.isfinite(self.value_scale) and self.value_scale > 0, f"value_scale must be > 0, got {self.value_scale}")
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
        return ch.Spec(
            n_vertices=self.n_vertices, train_chain_len=self.chain_len("train"),
            train_complexities=tuple(self.train_complexities),
            test_chain_len=self.chain_len("test"), test_complexities=tuple(self.test_complexities),
            trace_factor=self.trace_factor, parameterisation=self.parameterisation, forward_bias=self.forward_bias,
            value_kind=self.value_kind, value_scale=self.value_scale, sigma=self.sigma, optimizer=self.optimizer,
            lr=self.lr, baseline=self.baseline, batch=self.batch, steps=self.steps, n_eval=self.n_eval, dtype=self.dtype)


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
    "train1-3/test1-3": (1.00, 1.00), "train1-7/test1-7": (1.00, 0.99), "train1-11/test1-11": (0.99, 0.94),
    "train1-3/test1-11": (1.00, 1.00), "train1-3/test3": (1.00, 1.00), "train3/test3": (0.64, 0.01),
}


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis (window clipped at the start)."""
    c = np.cumsum(np.pad(x, [(0, 0)] * (x.ndim - 1) + [(1, 0)]), axis=-1)
    idx = np.arange(1, x.shape[-1] + 1)
    lo = np.maximum(idx - window, 0)
    return (c[..., idx] - c[..., lo]) / (idx - lo)


def steps_to_reward(reward: np.ndarray, level: float = 0.9, window: int = 50) -> list[int]:
    """Per seed, the first step at which the trailing ``window``-step mean training reward reaches
    ``level``; -1 if never. reward: (seeds, steps)."""
    sm = _smooth(np.asarray(reward, float), window)
    hit = sm >= level
    return [int(np.argmax(h)) if h.any() else -1 for h in hit]


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
        "accuracy_mean": am, "accuracy_std": asd, "traversal_mean": tm, "traversal_std": tsd,
        "seeds": list(config.seeds),
        "accuracy": acc_seed.tolist(), "traversal": trav_seed.tolist(),
        "test_complexities": list(config.test_complexities),
        "accuracy_per_complexity": acc.tolist(), "traversal_per_complexity": trav.tolist(),
        "final_train_reward": reward[:, -100:].mean(axis=1).tolist(),
        "final_train_traversal": traversal_curve[:, -100:].mean(axis=1).tolist(),
        "steps_to_reward_0.9": steps_to_reward(reward, 0.9),
        "steps": config.steps, "train_chain_len": config.chain_len("train"), "test_chain_len": config.chain_len("test"),
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


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def _tuples(v):
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v


def _span(cs) -> str:
    cs = list(cs)
    if len(cs) > 1 and cs == list(range(cs[0], cs[-1] + 1)):
        return f"{cs[0]}-{cs[-1]}"
    return ",".join(str(c) for c in cs)


def report_rows(runs) -> list[dict]:
    """One JSON-able row per stored config (the latest run of it), the talk's numbers beside it,
    learning curves downsampled to ``curve_points`` points (mean over seeds)."""
    latest = {}
    for r in runs:
        latest[r.path.name] = r
    rows = []
    fields = {f.name for f in dataclasses.fields(Config)}
    for r in latest.values():
        cfg = Config(**{k: _tuples(v) for k, v in r.config.items() if k in fields})
        preset = r.preset or "custom"
        base = PRESETS.get(base_preset(preset))
        overrides = {} if base is None else {f.name: r.config[f.name] for f in dataclasses.fields(Config)
                                             if f.name in r.config and _tuples(r.config[f.name]) != getattr(base, f.name)}
        m = r.metrics
        arrays = r.arrays()
        reward, trav = arrays["reward"], arrays["traversal"]
        window = max(1, reward.shape[1] // 100)
        idx = np.unique(np.linspace(0, reward.shape[1] - 1, min(cfg.curve_points, reward.shape[1])).astype(int))
        talk = TALK.get(preset) if not overrides else None
        rows.append({
            "experiment": NAME, "preset": preset, "overrides": overrides,
            "train": _span(cfg.train_complexities), "test": _span(cfg.test_complexities),
            "train_chain_len": cfg.chain_len("train"), "test_chain_len": cfg.chain_len("test"),
            "steps": cfg.steps, "batch": cfg.batch, "seeds": m["seeds"],
            "accuracy_mean": m["accuracy_mean"], "accuracy_std": m["accuracy_std"],
            "traversal_mean": m["traversal_mean"], "traversal_std": m["traversal_std"],
            "accuracy_per_seed": m["accuracy"], "traversal_per_seed": m["traversal"],
            "test_complexities": m["test_complexities"],
            "accuracy_per_complexity": np.mean(m["accuracy_per_complexity"], axis=0).tolist(),
            "traversal_per_complexity": np.mean(m["traversal_per_complexity"], axis=0).tolist(),
            "min_accuracy_over_complexities": float(np.min(np.mean(m["accuracy_per_complexity"], axis=0))),
            "min_traversal_over_complexities": float(np.min(np.mean(m["traversal_per_complexity"], axis=0))),
            "steps_to_reward_0.9": m["steps_to_reward_0.9"],
            "talk_accuracy": None if talk is None else talk[0], "talk_traversal": None if talk is None else talk[1],
            "curve_step": idx.tolist(),
            "curve_reward": _smooth(reward, window).mean(axis=0)[idx].tolist(),
            "curve_traversal": _smooth(trav, window).mean(axis=0)[idx].tolist(),
            "wall_seconds": r.meta.get("wall_seconds"),
        })
    order = {name: i for i, name in enumerate(PRESETS)}
    rows.sort(key=lambda row: (bool(row["overrides"]), order.get(row["preset"], len(order)), row["preset"]))
    _add_gap(rows)
    return rows


def _add_gap(rows: list[dict]) -> None:
    """Beside each row trained on one complexity ``c`` only and tested on ``c``: its gap to the row
    trained on ``1..c`` tested on ``c`` with everything else equal (same budget, seeds, overrides)."""
    def rest(row):
        return {k: v for k, v in row["overrides"].items() if k != "train_complexities"}

    for r in rows:
        if "-" in r["train"] or "," in r["train"] or r["test"] != r["train"]:
            continue
        c = int(r["train"])
        ref = next((o for o in rows if o["train"] == f"1-{c}" and o["test"] == r["test"] and o["steps"] == r["steps"]
                    and o["seeds"] == r["seeds"] and o["train_chain_len"] == r["train_chain_len"]
                    and o["test_chain_len"] == r["test_chain_len"] and rest(o) == rest(r)), None)
        if ref is not None:
            r["gap_reference"] = _label(ref)
            r["gap_accuracy"] = ref["accuracy_mean"] - r["accuracy_mean"]
            r["gap_traversal"] = ref["traversal_mean"] - r["traversal_mean"]


def _label(r: dict) -> str:
    return r["preset"] + "".join(f" {k}={v}" for k, v in r["overrides"].items())


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _pm(m, s) -> str:
    return f"{100 * m:.1f} ± {100 * s:.1f}%"


def _figure(rows: list[dict], out_dir: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency of the report
        return None
    fig_dir = Path(out_dir) / "figures" / NAME
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
    for r in rows:
        label = f"{r['preset']}" + (" *" if r["overrides"] else "")
        axes[0].plot(r["curve_step"], r["curve_reward"], label=label)
        axes[1].plot(r["curve_step"], r["curve_traversal"], label=label)
    axes[0].set_title("training reward (final-answer accuracy)")
    axes[1].set_title("training chain-traversal rate")
    for ax in axes:
        ax.set_xlabel("policy-gradient step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    path = fig_dir / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"figures/{NAME}/learning_curves.png"


def report_markdown(rows: list[dict], out_dir: Path) -> str:
    """The chains section: accuracy and traversal (mean ± std over seeds, and per seed) beside the
    talk's numbers, the gap of the complexity-3-only row, and the learning curves."""
    out = ["| preset | train | test | n train/test | steps | accuracy | traversal | per seed acc / trav "
           "| min over test c (acc / trav) | talk acc / trav | steps to reward 0.9 |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = _label(r)
        per_seed = ", ".join(f"{100 * a:.0f}/{100 * t:.0f}" for a, t in zip(r["accuracy_per_seed"], r["traversal_per_seed"]))
        hits = ", ".join(str(s) if s >= 0 else "never" for s in r["steps_to_reward_0.9"])
        out.append(
            f"| {name} | {r['train']} | {r['test']} | {r['train_chain_len']}/{r['test_chain_len']} | {r['steps']} | "
            f"{_pm(r['accuracy_mean'], r['accuracy_std'])} | {_pm(r['traversal_mean'], r['traversal_std'])} | {per_seed} | "
            f"{_pct(r['min_accuracy_over_complexities'])} / {_pct(r['min_traversal_over_complexities'])} | "
            f"{_pct(r['talk_accuracy'])} / {_pct(r['talk_traversal'])} | {hits} |")
    out.append("")
    out.append("Accuracy: share of sampled traces whose final answer is the start chain's terminal; traversal: share "
               "that walk the chain forward one vertex at a time; both averaged over the test complexities, then "
               "mean ± std over seeds (per seed: accuracy/traversal in %). 'n': vertices per chain. "
               "'steps to reward 0.9': first step where the 50-step mean training reward reaches 0.9, per seed.")
    for r in rows:
        if "gap_accuracy" in r:
            out.append("")
            out.append(f"**Gap at the same budget ({r['steps']} steps, seeds {r['seeds']}):** `{_label(r)}` reaches "
                       f"{_pm(r['accuracy_mean'], r['accuracy_std'])} accuracy and "
                       f"{_pm(r['traversal_mean'], r['traversal_std'])} traversal on complexity {r['test']}: "
                       f"{100 * r['gap_accuracy']:.1f} and {100 * r['gap_traversal']:.1f} points below "
                       f"`{r['gap_reference']}`.")
    fig = _figure(rows, out_dir)
    if fig:
        out.append("")
        out.append(f"![chains learning curves]({fig})")
    out.append("")
    return "\n".join(out)
