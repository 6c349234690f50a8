"""Dynamics figures: greedy low-rank learning and how special sequences break it (SPEC §3).

The runs are Table 1's GD runs with other settings: the same config type
(:class:`implicitbias.experiments.table1.Config`), the same compiled training loop and the same
trajectory logs (``|a|``, effective rank, ``gamma^(0)``, loss, extrapolation error every
``log_every`` updates). This module adds the SPEC §3 presets, per-seed summary numbers that state
the mechanism, and the figures.

Presets (each without and with special sequences) are the authors' dynamics notebooks: their
hyperparameters, their seed (one per figure, as in the paper), and their data and initialisation
streams (Table 1's defaults: NumPy ``RandomState`` data, Keras-seeded inits, the full-kernel
adaptive rate, Keras's Adam):

* ``standalone/L6``, ``standalone/L10`` — standalone SSM, teacher ``d* = 1`` (``a* = B* = C* = 1``),
  adaptive-lr GD on ``a, B, C`` (lr 0.01), no warm start, an exact tie of entries 0 and 1
  (``diff = 0.05 / e^(20 log10(1/sd_A))`` is below float resolution), 8 baseline and 10 special
  sequences with special mass on the last two positions (``L-2`` reads ``h_2``, ``L-1`` reads
  ``h_1``), 5,000 updates after the fit. L=6: seed 105, ``sd_A = sd_BC = 0.01``, eps 0.01;
  L=10: seed 4000, ``sd_A = 1e-3``, ``sd_BC = 0.05``, eps 0.05.
* ``network/L6``, ``network/L10`` — the SSM inside the ReLU network of SPEC §2c, Keras's Adam,
  20 + 20 sequences, special mass on the last two positions, eps 0.05, no warm start. L=6: seed
  4541, lr 0.01 (0.001 with special sequences); L=10: seed 4542, lr 0.01 and 20,000 updates after
  the fit (with special sequences lr 5e-5 and 5,000).
* ``authors/teacher_dim{2,3,4}/L6``, ``.../L10`` — teacher ``a* = (0.99, 0.8, 0.5, 0.3)[:d*]``,
  ``B* = C* = 1``; student ``B = C = 1`` held fixed (``train_BC=False``: as the authors' ``fix_B_C``,
  their gradients still enter the adaptive rate), near-ties of the first ``d*`` entries (the
  authors' ``dim3``/``dim4`` flags), eps 0.01, 1,500 updates after the fit, special mass at
  ``L-2`` only (with ``B = C = 1`` fixed, ``h_1 = d`` cannot move, so an entry at ``L-1`` could
  never be fitted). L=6: ``sd_A = 0.01``, lr 0.01 (0.001 with special sequences), seeds
  302 / 401 / 403 for ``d* = 2 / 3 / 4``; L=10: ``sd_A = 0.01``, lr 0.001, seeds 1202 / 1201 / 1201.
  These reproduce the authors' printed spectra to 2-3 digits, and in them the tied entries grow
  together: at L=10, ``d* = 3`` ends at (0.998, 0.695, 0.687), not at the teacher's (0.99, 0.8, 0.5).
* ``teacher_dim{2,3,4}/L6``, ``.../L10`` — the staircase: the same teachers and fixed ``B = C = 1``
  with our choices, which let the entries be learned one after another (4 seeds drawn from
  ``jax.random`` keys, with the diagonal-only adaptive rate): no tie (``tie_init=False``; a
  tie makes entries grow as one), ``eps = 1e-6`` (the last teacher entry adds at most
  ``0.3^3 = 0.027`` to any fitted ``h_k``, so ``eps = 0.01`` stops before it is learned). The
  seeds are the first four whose ``d* + 1`` largest initial entries are pairwise at least 1%
  apart (:func:`separated_seeds`, a rule on the initialisation alone): greedy learning takes the
  entries in the order of their initial magnitudes, and two that start closer take off together.
  L=10 seed 2 is the case the rule skips: its 3rd and 4th initial entries are 0.2% apart
  (0.001460, 0.001457), the two grow together (the 3rd larger at every logged update) and the 4th
  crosses half its smaller final value first (66,400 vs 68,600 updates). That leaves seeds 0-3 at
  L=6 and 0, 1, 3, 4 at L=10. L=10:
  ``sd_A = 1e-3``, ``lr0 = 0.001``, at most 5e6 updates without special sequences (measured on seeds
  0-3: after 1e6 seed 2 of ``d* = 3`` still held a 4th entry at 0.116 and ``d* = 4`` had learned its 4th entry in
  1 of 4 seeds; after 5e6 every seed has exactly ``d*`` entries above 0.1), 1e6 with them. L=6:
  ``sd_A = 0.01``, ``lr0 = 0.01``, at most 1e6 updates (with ``sd_A = 1e-3`` the second entry's
  gradient, of order ``a^3``, is too small: the runs stayed on the plateau after the first entry
  even after 5e6 updates). At L=6 the baseline inputs fill positions 0-2 (``baseline_stop=3``,
  constraining ``h_4, h_5, h_6``; see ``STAIRCASE_BY_L``): with Table 1's positions 0-1
  only ``h_5, h_6`` are constrained, two entries fit them exactly, and ``d* = 3, 4`` ended with
  two equal entries near 0.92, out of order in 6 of 8 runs. Three constraints cannot pin four
  entries either: at L=6 the entries are learned in order but their values are not the
  teacher's (e.g. ``d* = 3``: 0.96, 0.87, 0.30, 0.29). ``eps = 1e-6`` is reached by none of the
  L=6 runs within 1e6 updates and by 2, 1 and 1 of 4 seeds for ``d* = 2, 3, 4`` at L=10 within
  5e6 (the last entry is still creeping to its value); the counts and the order above hold
  regardless.

Both teacher-dimension families measure the extrapolation error from ``h_2`` (``error_from=2``):
with ``B = C = 1`` held fixed, ``h_1 = sum_i B_i C_i = d`` can never equal the teacher's ``d*``
(no training input reads it), and that one term would pin the error at ``(d - d*) / d*`` for the
whole run (9, 5.67 and 4 at L=10).

Any of it can be changed with ``--set`` (e.g. ``--seeds 105,106,107``, ``--set data_rng=jax``).

Summary numbers per seed (stored in each run's metrics): final effective rank, entries of ``|a|``
above 0.1 and 0.5, the update at which the largest entry first reached 0.5 (the "jump", -1 if never),
``max |gamma^(0)|`` over the logged trajectory, and for the top entries the update at which each
first reached half its final value (the staircase). Times are resolved to ``log_every`` updates.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import table1
from .base import Record, config_to_dict

NAME = "dynamics"
Config = table1.Config
TOP_ENTRIES = 7  # entries of |a| drawn in the figures (SPEC §3)


def _cell(name: str, without: Config) -> dict[str, Config]:
    return {name: without, f"{name}/special": replace(without, special=True)}


def _standalone(L: int, seed: int, sd_A: float, sd_BC: float, eps: float) -> Config:
    base = table1.PRESETS[f"beyond_theorem/L{L}"]
    return replace(base, seeds=(seed,), sd_A=sd_A, sd_BC=sd_BC, eps=eps, lr=0.01, warm_init=0.0,
                   diff=0.05 / math.exp(20 * math.log10(1 / sd_A)), extra_steps=5000,
                   special_positions=(L - 2, L - 1))


def _network(L: int, seed: int) -> Config:
    base = table1.PRESETS[f"ssm_in_nn/L{L}"]
    return replace(base, seeds=(seed,), eps=0.05, warm_init=0.0, special_positions=(L - 2, L - 1),
                   extra_steps=5000 if L == 6 else 20_000)


_TEACHER_DIM_SEEDS = {6: {2: 302, 3: 401, 4: 403}, 10: {2: 1202, 3: 1201, 4: 1201}}


# The staircase's per-size choices (module docstring). baseline_stop: positions 0..stop-1 constrain
# h_L .. h_{L-stop+1}. Table 1's L=6 data (stop 2) fix only h_6 and h_5, which two entries fit
# exactly, so a third teacher entry is never asked for; stop 3 adds h_4 (power a^3) and keeps every
# constrained power >= 3, the greedy regime; stop 4 would add h_3, whose gradient a_i^1 grows all
# entries at one rate (measured: order lost in 11 of 12 L=6 runs).
# seeds: separated_seeds(preset) (checked by a test), the same for d* = 2, 3, 4 at each size.
STAIRCASE_BY_L = {
    6: dict(sd_A=0.01, lr=0.01, max_steps=1_000_000, baseline_stop=3, seeds=(0, 1, 2, 3)),
    10: dict(sd_A=1e-3, lr=0.001, max_steps=5_000_000, baseline_stop=7, seeds=(0, 1, 3, 4)),
}
# Greedy learning takes entries one at a time in the order of their initial magnitudes; two that
# start within a fraction of a percent of each other take off together (L=10 seed 2: 0.2% apart, its
# 3rd and 4th entries cross half their final values 2,200 updates apart, the 4th first). The
# staircase presets use the first seeds whose top d*+1 initial entries are at least this far apart.
STAIRCASE_MIN_GAP = 0.01


def _staircase(d_star: int, L: int) -> Config:
    base = table1.PRESETS[f"beyond_theorem/L{L}"]
    # our choices were made with the jax.random streams and the diagonal-only rate (module docstring)
    return replace(base, data_rng="jax", init_rng="jax", full_kernel=False,
                   teacher_dim=d_star, train_BC=False, tie_init=False, warm_init=0.0, eps=1e-6,
                   special_positions=(L - 2,), error_from=2, **STAIRCASE_BY_L[L])


def top_init_gap(config: Config, seed: int) -> float:
    """The smallest relative gap ``1 - |a|_(i+1) / |a|_(i)``, ``i = 1..d*``, among the ``d* + 1``
    largest initial magnitudes of ``seed`` (``d* = config.teacher_dim``): how close the entries
    greedy learning must take one at a time, and their runner-up, start to one another."""
    model = table1.initial_model(config, seed)
    a = np.sort(np.abs(np.asarray(getattr(model, "ssm", model).a)))[::-1][: config.teacher_dim + 1]
    return float(np.min(1.0 - a[1:] / a[:-1]))


def separated_seeds(config: Config, n: int = 4, min_gap: float = STAIRCASE_MIN_GAP) -> tuple[int, ...]:
    """The first ``n`` seeds from 0 whose :func:`top_init_gap` is at least ``min_gap`` (a rule on the
    initialisation alone, applied before any training)."""
    if not 0 <= min_gap < 1:  # a relative gap between positive magnitudes is below 1: no seed would do
        raise ValueError(f"min_gap must be in [0, 1), got {min_gap}")
    seeds: list[int] = []
    seed = 0
    while len(seeds) < n:
        if top_init_gap(config, seed) >= min_gap:
            seeds.append(seed)
        seed += 1
    return tuple(seeds)


def _authors_teacher_dim(d_star: int, L: int) -> Config:
    base = table1.PRESETS[f"beyond_theorem/L{L}"]
    return replace(base, seeds=(_TEACHER_DIM_SEEDS[L][d_star],), teacher_dim=d_star, train_BC=False,
                   warm_init=0.0, sd_A=0.01, sd_BC=0.01 if L == 6 else 0.001, eps=0.01,
                   lr=0.01 if L == 6 else 0.001, diff=0.05 / math.exp((2 if L == 6 else 3) * math.log10(1 / 0.01)),
                   special_positions=(L - 2,), error_from=2)


PRESETS: dict[str, Config] = {}
PRESETS.update(_cell("standalone/L6", _standalone(6, 105, sd_A=0.01, sd_BC=0.01, eps=0.01)))
PRESETS.update(_cell("standalone/L10", _standalone(10, 4000, sd_A=1e-3, sd_BC=0.05, eps=0.05)))
PRESETS.update(_cell("network/L6", _network(6, 4541)))
PRESETS.update(_cell("network/L10", _network(10, 4542)))
for _d in (2, 3, 4):
    for _L in (6, 10):
        PRESETS.update(_cell(f"teacher_dim{_d}/L{_L}", _staircase(_d, _L)))
for _d in (2, 3, 4):
    for _L in (6, 10):
        PRESETS.update(_cell(f"authors/teacher_dim{_d}/L{_L}", _authors_teacher_dim(_d, _L)))
# the authors' learning rates with special sequences
PRESETS["network/L6/special"] = replace(PRESETS["network/L6/special"], lr=0.001)
PRESETS["network/L10/special"] = replace(PRESETS["network/L10/special"], lr=5e-5, extra_steps=5000)
for _d in (2, 3, 4):
    PRESETS[f"authors/teacher_dim{_d}/L6/special"] = replace(PRESETS[f"authors/teacher_dim{_d}/L6/special"], lr=0.001)
    PRESETS[f"teacher_dim{_d}/L10/special"] = replace(PRESETS[f"teacher_dim{_d}/L10/special"], max_steps=1_000_000)


# --------------------------------------------------------------------------------------------
# summary numbers
# --------------------------------------------------------------------------------------------

def first_crossing(steps: np.ndarray, values: np.ndarray, level: float) -> int:
    """The first logged update at which ``values >= level``; -1 if never. ``steps, values: (T,)``
    (unused rows: ``steps < 0`` or NaN values)."""
    ok = (steps >= 0) & np.isfinite(values) & (values >= level)
    return int(steps[np.argmax(ok)]) if ok.any() else -1


def summarize(arrays: dict[str, np.ndarray], n_top: int = 4) -> dict[str, list]:
    """Per-seed summary numbers of SPEC §3 from a run's arrays (``log_abs_a: (S, T, d)``,
    ``log_steps: (S, T)``, ``log_gamma0: (S, T)``, ``a_final: (S, d)``)."""
    a_final = np.abs(arrays["a_final"])
    steps, abs_a, gamma0 = arrays["log_steps"], arrays["log_abs_a"], arrays["log_gamma0"]
    out: dict[str, list] = {"n_above_0.1": [], "n_above_0.5": [], "jump_step": [], "max_abs_gamma0": [],
                            "top_final": [], "half_crossing": []}
    for s in range(a_final.shape[0]):
        used = steps[s] >= 0
        order = np.argsort(-a_final[s])
        out["n_above_0.1"].append(int((a_final[s] > 0.1).sum()))
        out["n_above_0.5"].append(int((a_final[s] > 0.5).sum()))
        out["jump_step"].append(first_crossing(steps[s][used], abs_a[s][used].max(axis=-1), 0.5))
        out["max_abs_gamma0"].append(float(np.abs(gamma0[s][used]).max()))
        top = order[:n_top]
        out["top_final"].append([float(a_final[s, i]) for i in top])
        out["half_crossing"].append([first_crossing(steps[s], abs_a[s, :, i], 0.5 * a_final[s, i]) for i in top])
    return out


def run(config: Config) -> Record:
    """Train every seed (Table 1's loop) and add the SPEC §3 summary numbers."""
    record = table1.run(config)
    record.metrics.update(summarize(record.arrays, n_top=max(4, config.teacher_dim)))
    return record


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------

def _panels(axes, arrays: dict[str, np.ndarray], title: str) -> None:
    """Draw one run into a column of four axes: top |a_i| (first seed), effective rank, gamma^(0),
    loss and extrapolation error (every seed, log scale)."""
    steps, abs_a = arrays["log_steps"], arrays["log_abs_a"]
    n_seeds = steps.shape[0]
    ok = steps[0] >= 0
    top = np.argsort(-np.abs(arrays["a_final"][0]))[:TOP_ENTRIES]
    for i in top:
        axes[0].plot(steps[0, ok], abs_a[0, ok, i], lw=1.2)
    axes[0].set_title(title, fontsize=9)
    axes[0].set_ylabel(f"top {TOP_ENTRIES} |a_i| (first seed)")
    colors = [f"C{k}" for k in range(n_seeds)]
    for s in range(n_seeds):
        ok = steps[s] >= 0
        axes[1].plot(steps[s, ok], arrays["log_effective_rank"][s, ok], color=colors[s], lw=1)
        axes[2].plot(steps[s, ok], arrays["log_gamma0"][s, ok], color=colors[s], lw=1)
        axes[3].semilogy(steps[s, ok], arrays["log_loss"][s, ok], color=colors[s], lw=1)
        axes[3].semilogy(steps[s, ok], arrays["log_error"][s, ok], color=colors[s], lw=1, ls="--")
    axes[1].set_ylabel("effective rank")
    axes[2].set_ylabel("gamma^(0)")
    axes[3].set_ylabel("loss (—), error (--)")
    axes[3].set_xlabel("iteration (linear to 100, then log)")
    for ax in axes:  # plateaus of 1e5 updates and jumps within 1e3 both stay visible
        ax.set_xscale("symlog", linthresh=100)


def plot_run(arrays: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """One run's four panels, stacked, as a PNG (``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(5, 9), constrained_layout=True)
    _panels(axes, arrays, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_pair(without: dict[str, np.ndarray], with_: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """Without (left) and with (right) special sequences side by side; each row shares its y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 2, figsize=(10, 9), sharey="row", constrained_layout=True)
    _panels(axes[:, 0], without, f"{title}: without special")
    _panels(axes[:, 1], with_, f"{title}: with special")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _latest(runs) -> dict[str, object]:
    """The latest stored run per preset name (runs with overrides keep their directory name)."""
    out = {}
    for r in runs:
        base = PRESETS.get(r.preset or "")
        key = r.preset if base is not None and config_to_dict(base) == r.config else f"{r.preset}@{r.path.name}"
        out[key] = r
    return out


def plot(runs, out_dir: Path) -> list[Path]:
    """Every run's figure (``<preset>.png``) and a side-by-side figure per preset with both cells
    stored (``<preset>__pair.png``), under ``out_dir``. Returns the paths written."""
    latest = _latest(runs)
    written = []
    for key, r in latest.items():
        written.append(plot_run(r.arrays(), key, out_dir / f"{_file(key)}.png"))
    for key, r in latest.items():
        partner = latest.get(f"{key}/special")
        if partner is not None:
            written.append(plot_pair(r.arrays(), partner.arrays(), key, out_dir / f"{_file(key)}__pair.png"))
    return written


def _file(key: str) -> str:
    return key.replace("/", "_").replace("@", "_")


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def report_rows(runs) -> list[dict]:
    rows = []
    for key, r in _latest(runs).items():
        m = r.metrics
        rows.append({
            "experiment": NAME, "preset": key, "special": r.config["special"], "teacher_dim": r.config["teacher_dim"],
            "L": r.config["L"], "d": r.config["d"], "seeds": m["seeds"],
            "final_effective_rank": m["final_effective_rank"], "n_above_0.1": m["n_above_0.1"],
            "n_above_0.5": m["n_above_0.5"], "jump_step": m["jump_step"], "max_abs_gamma0": m["max_abs_gamma0"],
            "top_final": m["top_final"], "half_crossing": m["half_crossing"], "reached_eps": m["reached_eps"],
            "error": m["error"], "path": str(r.path),
        })
    order = {name: i for i, name in enumerate(PRESETS)}
    rows.sort(key=lambda row: (order.get(row["preset"], len(order)), row["preset"]))
    return rows


def report_markdown(rows: list[dict], out_dir: Path) -> str:
    """Summary numbers per preset and seed, and the side-by-side figures (written under
    ``out_dir/figures/dynamics``)."""
    from ..store import Store

    fig_dir = Path(out_dir) / "figures" / NAME
    store = Store(out_dir)
    runs = [store.load(Path(r["path"])) for r in rows]
    plot(runs, fig_dir)
    lst = lambda xs, f="{}": ", ".join(f.format(x) for x in xs)
    out = ["Per seed: final effective rank; entries of |a| above 0.1 / 0.5; update of the jump (largest entry "
           "reaches 0.5); max |gamma^(0)|; top entries at the end; update at which each reached half its final value.\n",
           "| preset | eff. rank | > 0.1 | > 0.5 | jump | max abs gamma0 | top entries (first seed) | half-crossings (first seed) | fit |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fit = r["reached_eps"]
        out.append(
            f"| {r['preset']} | {lst(r['final_effective_rank'], '{:.2f}')} | {lst(r['n_above_0.1'])} | {lst(r['n_above_0.5'])} | "
            f"{lst(r['jump_step'])} | {lst(r['max_abs_gamma0'], '{:.2g}')} | {lst(r['top_final'][0], '{:.3f}')} | "
            f"{lst(r['half_crossing'][0])} | {'yes' if all(fit) else f'{sum(fit)}/{len(fit)}'} |")
    out.append("")
    for r in rows:
        pair = fig_dir / f"{_file(r['preset'])}__pair.png"
        if not r["special"] and pair.exists():
            out.append(f"### {r['preset']}\n")
            out.append(f"![{r['preset']}: without vs with special sequences]({pair.relative_to(out_dir).as_posix()})\n")
    return "\n".join(out)
