"""Our Table 1 GD cells against the authors' own procedure, run in TensorFlow/Keras.

Reference data: ``scripts/authors_keras/logs/*.json``, written by
``scripts/authors_keras/table1_keras.py`` (their ``common/*.py`` and Table 1 notebooks re-typed;
TF 2.21 + tf_keras, float32; see that folder's README). Each cell was run twice, differing only
in float32 rounding: ``logs/`` with Keras's default per-epoch reordering of the one full batch
(``fit(shuffle=True)``, TensorFlow seeded with the run's seed) and ``logs/shuffle_none/`` in the
natural order. The authors never seeded TensorFlow, so their own runs varied within such a spread.

We compare our float32 runs (``dtype="float32"``, the authors' precision) with theirs seed by seed:
the update at which the train loss first is ``<= eps`` (``hit_step``; their epoch index + 1), and
the generalization error and four largest ``|a_i|`` at two points: where their notebooks read the
number they print, the post-optimum callback's last entry (``metrics["error"]``, ``a_measured``;
their ``error_last_logged``), and after all extra updates (``metrics["error_end"]``, ``a_final``;
their ``error_end``).

**Tolerances: what rounding does, measured on the machine that runs the test.** Beside our run, the
test trains ``COPIES`` copies of each seed whose initial parameters are perturbed by a relative
``JITTER = 1e-7`` (``init_jitter``: about one float32 rounding, 2^-24 = 6e-8, of every parameter).
These copies and our run form the *rounding cloud* of the seed: its range (the 0% and 100%
quantiles of the 1 + COPIES values) is how far rounding alone moves the quantity on this CPU. A
quantity passes when the range of their two runs (which differ only in float32 rounding, see above)
lies within one cloud width of the cloud: ``gap(cloud, theirs) <= width(cloud) + floor``. Another
CPU rounds differently, so its run is another member of (nearly) the same cloud; that shifts the
cloud by less than its width, which the margin holds. ``floor``: 1 update for ``hit_step`` (a loss
that crosses eps within its last bit moves the crossing by one update) and 8 float32 ulps relative
for the values (the measurement's own rounding). Only where our run and theirs differ by more than
rounding (an implementation difference, the same on every CPU) does a cell add a stated
``SYSTEMATIC`` allowance, measured as the gap beyond the cloud (see its comments). A systematic
error in our procedure (data, initialisation, optimiser, measurement point) moves the whole cloud
away from their runs and fails.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from implicitbias.experiments import table1
from implicitbias.record import Record

LOGS = Path(__file__).resolve().parents[1] / "scripts" / "authors_keras" / "logs"
ORDERS = {"keras": LOGS, "none": LOGS / "shuffle_none"}  # fit's seeded reordering of the batch / natural order
CELLS = [f"{s}/L{n}{sp}" for s in ("beyond_theorem", "ssm_in_nn") for n in (6, 10) for sp in ("", "/special")]
# The fast suite keeps the network's ssm_in_nn/L10 cell (Keras's Adam through the MLP, where rounding
# matters most; ~10-17 s with its rounding cloud). The rest run with the slow reproductions, to keep
# the fast suite under its budget: ssm_in_nn/L10/special (moved when the knockout tests came),
# ssm_in_nn/L6 (seed 4543 needs 99k updates), ssm_in_nn/L6/special,
# and the four linear cells (adaptive GD on the full kernel, ~10-14 s per L=10 cell; the fast
# test_table1 checks the beyond_theorem/L6 means against the paper, and test_ssm the full kernel's
# gradients against finite differences).
SLOW_CELLS = {"ssm_in_nn/L10/special", "ssm_in_nn/L6", "beyond_theorem/L6", "beyond_theorem/L6/special",
              "ssm_in_nn/L6/special", "beyond_theorem/L10", "beyond_theorem/L10/special"}


@functools.cache
def authors(cell: str, order: str = "keras") -> dict:
    """One reference file, with its per-seed entries also keyed by seed (``by_seed``)."""
    data = json.loads((ORDERS[order] / (cell.replace("/", "__") + ".json")).read_text())
    data["by_seed"] = {r["seed"]: r for r in data["per_seed"]}
    return data


COPIES = 8  # perturbed copies per seed in the rounding cloud
JITTER = 1e-7  # relative init_jitter: the size of one float32 rounding of every initial parameter
F32_ULP = float(np.finfo(np.float32).eps)


def f32(cell: str):
    """The cell in the authors' float32 (the ssm_in_nn presets already are)."""
    return replace(table1.PRESETS[cell], dtype="float32")


@functools.cache
def ours(cell: str):
    return table1.run(f32(cell))


@functools.cache
def cloud(cell: str) -> Record:
    """``COPIES`` perturbed copies of every seed (hit_step, both errors, both ``a``), copies of
    seed ``i`` in rows ``i * COPIES ... (i + 1) * COPIES - 1`` (copy ``k`` of seed ``i`` is perturbation
    ``i * COPIES + k``, as if all ran in one batch). Run as ``COPIES`` batches of the cell's own seeds,
    which reuse the compiled program of :func:`ours` instead of compiling one for a batch ``COPIES``
    times larger."""
    cfg = f32(cell)
    n = len(cfg.seeds)
    runs = [
        table1.run(replace(cfg, init_jitter=JITTER, jitter_index=tuple(i * COPIES + k for i in range(n))))
        for k in range(COPIES)
    ]
    order = lambda v: np.stack([np.asarray(v[k]) for k in range(COPIES)], 1).reshape(n * COPIES, *np.shape(v[0])[1:])
    return Record({q: order([r.metrics[q] for r in runs]) for q in ("hit_step", "error", "error_end")},
                  {q: order([r.arrays[q] for r in runs]) for q in ("a_measured", "a_final")})


def interval_gap(a, b) -> np.ndarray:
    """Elementwise distance between the ranges ``[min a, max a]`` and ``[min b, max b]`` over the
    first axis (0 where they overlap)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.maximum(0.0, np.maximum(b.min(axis=0) - a.max(axis=0), a.min(axis=0) - b.max(axis=0)))


def distance_to_range(value, refs) -> np.ndarray:
    """Elementwise distance of ``value`` to ``[min(refs), max(refs)]`` (0 inside)."""
    refs = np.asarray(refs, dtype=np.float64)
    lo, hi = refs.min(axis=0), refs.max(axis=0)
    value = np.asarray(value, dtype=np.float64)
    return np.maximum(0.0, np.maximum(lo - value, value - hi))


# Implementation differences beyond rounding (the same on every CPU), per cell: the gap between
# their runs and our rounding cloud that remains after the cloud's width, measured (seed) on this
# machine and rounded up to one significant digit. Only ssm_in_nn/L10/special has one: after 5,000
# Adam updates near the optimum seed 4544's error is 1.3e-4 (relative) from theirs against a cloud
# width of 3.6e-5 (its four largest |a_i| agree to 1e-6), and seed 4545's top-4 |a_i| 4.9e-5 from
# theirs against a width of 2.4e-5. Every other cell needs none: their runs lie inside or within
# one width of our cloud at every seed and point (measured with COPIES = 8).
SYSTEMATIC = {
    "ssm_in_nn/L10/special": dict(error=2e-4, top4=1e-4),
}

# Seeds whose end state is decided by rounding: ours and theirs settle in different states.
DECIDED_BY_ROUNDING = {
    ("ssm_in_nn/L6", 4541): "test_ssm_in_nn_L6_seed_4541_parts_from_the_authors_code_in_the_jump",
}

# test_first_101_updates_match_the_authors_code: a rounding bound. On the plateau of the first updates
# nothing amplifies a difference, so each update adds at most about one float32 ulp of relative
# rounding to a parameter, ours and theirs: 101 updates, 101 ulps (1.2e-5; measured on this machine:
# 4.9e-6 at most, ssm_in_nn/L10/special).
TOLERANCE_101 = 101 * F32_ULP


# --------------------------------------------------------------------------------------------
# the reference files themselves
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize("cell", CELLS)
def test_reference_runs_use_the_presets(cell, order):
    """The Keras runs used our presets' seeds and hyperparameters, every seed reached eps, and the
    notebook's printed value is the post-optimum callback's entry after extra update 1401 / 4901."""
    cfg, ref = table1.PRESETS[cell], authors(cell, order)
    s = ref["settings"]
    assert tuple(ref["seeds"]) == cfg.seeds and ref["special"] == cfg.special
    assert (s["L"], s["d"], s["n_baseline"], s["n_special"], s["baseline_stop"]) == (
        cfg.L,
        cfg.d,
        cfg.n_baseline,
        cfg.n_special,
        cfg.baseline_stop,
    )
    assert (s["eps"], s["extra"], s["warm_init"], s["lr_used"]) == (cfg.eps, cfg.extra_steps, cfg.warm_init, cfg.lr)
    np.testing.assert_allclose([s["sd_A"], s["sd_BC"], s["diff"]], [cfg.sd_A, cfg.sd_BC, cfg.diff], rtol=1e-12)
    assert (s["kind"] == "ssm_in_nn") == (cfg.setting == "ssm_in_nn")
    if cfg.setting == "ssm_in_nn":
        assert (s["m"], s["depth"], s["sd_D"], s["n_test"]) == (cfg.m, cfg.depth, cfg.sd_D, cfg.n_test)
    assert ref["seeded_initializer_agrees"] and ref["shuffle"] == order and ref["versions"]["tensorflow"]
    for r in ref["per_seed"]:
        assert r["hit_update"] is not None and r["updates_total"] == r["hit_update"] + cfg.extra_steps
        assert r["last_logged_extra_update"] == cfg.extra_steps - 99


# --------------------------------------------------------------------------------------------
# ours against theirs
# --------------------------------------------------------------------------------------------


# every cell with the slow reproductions (ssm_in_nn/L10, 10 s, was the fast one until the knockout tests
# came; its whole-cell test above stays in the fast suite)
FAST_101: set[str] = set()


@pytest.mark.parametrize("cell", [c if c in FAST_101 else pytest.param(c, marks=pytest.mark.slow) for c in CELLS])
def test_first_101_updates_match_the_authors_code(cell):
    """Same initialisation, data and optimiser: after 101 updates (their first logged state after
    update 1) the four largest |a_i| agree with their run to float32 rounding."""
    ref = authors(cell)
    rows = {s: next((row for row in r["log_to_eps"] if row["update"] == 101), None) for s, r in ref["by_seed"].items()}
    seeds = tuple(s for s, row in rows.items() if row is not None)  # a seed that hit eps before 101 has no such row
    assert len(seeds) >= 2
    rec = table1.run(replace(table1.PRESETS[cell], dtype="float32", seeds=seeds, max_steps=101))
    assert rec.metrics["steps"] == [101] * len(seeds)
    top = np.sort(np.abs(rec.arrays["a_final"]), axis=1)[:, ::-1][:, :4]
    np.testing.assert_allclose(top, [rows[s]["top_abs_a"] for s in seeds], rtol=TOLERANCE_101)


def _cell_params():
    return [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CELLS else c for c in CELLS]


@pytest.mark.parametrize("cell", _cell_params())
def test_cell_matches_the_authors_code(cell):
    """Seed by seed: hit_step, and the error and top-4 |a| where their notebook reads them (the last
    logged update) and at the end: their two runs lie within one width of our rounding cloud (module
    docstring); seeds in DECIDED_BY_ROUNDING are checked in their own test."""
    rec, copies, cfg = ours(cell), cloud(cell), table1.PRESETS[cell]
    extra = SYSTEMATIC.get(cell, {})
    runs = [authors(cell, order)["by_seed"] for order in ORDERS]
    points = {  # ours (error metric, a array) -> theirs (error key, top-4 key)
        "last_logged": ("error", "a_measured", "error_last_logged", "top4_abs_a_last_logged"),
        "end": ("error_end", "a_final", "error_end", "top4_abs_a_end"),
    }
    top4 = lambda a: np.sort(np.abs(np.asarray(a)), axis=-1)[..., ::-1][..., :4]
    for i, seed in enumerate(cfg.seeds):
        if (cell, seed) in DECIDED_BY_ROUNDING:
            continue
        refs = [r[seed] for r in runs]
        rows = slice(i * COPIES, (i + 1) * COPIES)
        hits = [rec.metrics["hit_step"][i], *copies.metrics["hit_step"][rows]]
        theirs = [r["hit_update"] for r in refs]
        assert interval_gap(hits, theirs) <= np.ptp(hits) + 1, (seed, hits, theirs)
        for point, (err_key, a_key, their_err, their_top) in points.items():
            errs = np.array([rec.metrics[err_key][i], *copies.metrics[err_key][rows]])
            theirs = [r[their_err] for r in refs]
            scale = abs(errs[0])
            allowed = np.ptp(errs) + scale * (8 * F32_ULP + extra.get("error", 0.0))
            assert interval_gap(errs, theirs) <= allowed, (point, seed, errs, theirs)
            tops = np.vstack([top4(rec.arrays[a_key][i]), top4(copies.arrays[a_key][rows])])
            theirs = np.array([r[their_top] for r in refs])
            allowed = np.ptp(tops, axis=0) + 8 * F32_ULP * tops[0] + extra.get("top4", 0.0)
            assert np.all(interval_gap(tops, theirs) <= allowed), (point, seed, tops[0], theirs)
    if cfg.L == 10:
        # the L=10 cells print what their notebook printed (table1.AUTHORS_NOTEBOOK), by the cloud's rule:
        # the range of our cell means (ours and each perturbed copy's mean over the seeds) lies within one
        # width of the range of theirs (their two runs' means and the notebook's). Measured: the beyond
        # cells' means agree to 5 digits; the network's without special sequences move with rounding
        # (seed 4540 spikes near the end: copies' means 0.0448-0.0513, XLA single-threaded 0.0485; their
        # two runs 0.0451 / 0.0477, the notebook 0.0450), so a fixed 1% around the notebook would encode
        # this CPU.
        saved = table1.AUTHORS_NOTEBOOK[(cfg.setting, cfg.L, cfg.special)]
        per_copy = np.asarray(copies.metrics["error"]).reshape(len(cfg.seeds), COPIES)
        means = [rec.metrics["error_mean"], *per_copy.mean(0)]
        theirs = [saved, *(np.mean([r["error_last_logged"] for r in authors(cell, o)["per_seed"]]) for o in ORDERS)]
        allowed = np.ptp(means) + 8 * F32_ULP * abs(means[0])
        assert interval_gap(means, theirs) <= allowed, (means, theirs)


@pytest.mark.slow
def test_ssm_in_nn_L6_seed_4541_parts_from_the_authors_code_in_the_jump():
    """ssm_in_nn/L6 seed 4541 without special sequences: ours (float32) follows their run to 6e-7
    (relative, four largest |a_i|) up to update 14,001, reaches eps at the same update (15,096),
    and parts from it during the jump of the first entry (updates 15,000-15,100): both of their
    runs end with the second |a_i| at 0.12 / 0.11 and error 3.1e-4 / 1.0e-4, ours at 0.39 and 0.063.
    With their value for this one seed our cell would give their ratio, far above 10x: our 3.2x for
    this cell comes from this seed alone."""
    cell, seed = "ssm_in_nn/L6", 4541
    refs = [authors(cell, order)["by_seed"][seed] for order in ORDERS]
    early = replace(f32(cell), seeds=(seed,) * (1 + COPIES), max_steps=14001)
    jitter = replace(early, init_jitter=JITTER)
    tops = np.sort(np.abs(np.asarray(table1.run(early).arrays["a_final"][:1])), axis=1)[:, ::-1][:, :4]
    tops = np.vstack([tops, np.sort(np.abs(np.asarray(table1.run(jitter).arrays["a_final"])), axis=1)[:, ::-1][:, :4]])
    theirs = [next(row for row in ref["log_to_eps"] if row["update"] == 14001)["top_abs_a"] for ref in refs]
    # the rounding cloud's rule (module docstring); measured: 6.0e-7 relative apart
    assert np.all(interval_gap(tops, theirs) <= np.ptp(tops, axis=0) + 8 * F32_ULP * tops[0])

    rec = ours(cell)
    i = table1.PRESETS[cell].seeds.index(seed)
    ours_top = np.sort(np.abs(rec.arrays["a_final"][i]))[::-1]
    assert [r["hit_update"] for r in refs] == [rec.metrics["hit_step"][i]] * 2 == [15096] * 2
    for ref in refs:
        assert ref["error_end"] < 1e-3 and 0.1 < ref["top4_abs_a_end"][1] < 0.13
    assert rec.metrics["error"][i] > 0.05 and ours_top[1] > 0.3

    special = ours(cell + "/special").metrics["error"]
    errors = list(rec.metrics["error"])
    for ref in refs:
        errors[i] = ref["error_last_logged"]
        assert np.mean(special) / np.mean(errors) > 10  # measured 33x and 34x
    assert np.mean(special) / np.mean(rec.metrics["error"]) < 10  # measured 3.2x


# --------------------------------------------------------------------------------------------
# what their code gives (the reference data alone)
# --------------------------------------------------------------------------------------------

# Mean error with / without special sequences in their code, each of their two runs, where their
# notebook reads it (the last logged update) and at the end: the bounds hold both runs (measured,
# last logged / end: L6 85.8x and 75.1x / 71.6x and 82.2x; L10 9.87x and 9.87x / 9.60x and 9.60x;
# network L6 32.2x and 35.4x / 32.7x and 34.3x; L10 1.88x and 1.98x / 1.95x and 1.98x). They replaced
# the strict xfails of an earlier ordering test for beyond_theorem/L10 and ssm_in_nn/L10: below 10x
# in the authors' own code as in ours. For ssm_in_nn/L6 their code gives 33x; ours does not, for
# one seed decided by rounding (above).
RATIO_IN_THEIR_CODE = {
    "beyond_theorem/L6": {"error_last_logged": (70, 90), "error_end": (70, 85)},
    "beyond_theorem/L10": {"error_last_logged": (9.8, 9.95), "error_end": (9.5, 9.7)},
    "ssm_in_nn/L6": {"error_last_logged": (30, 40), "error_end": (30, 40)},
    "ssm_in_nn/L10": {"error_last_logged": (1.8, 2.1), "error_end": (1.8, 2.1)},
}


@pytest.mark.parametrize("point", ["error_last_logged", "error_end"])
@pytest.mark.parametrize("cell", sorted(RATIO_IN_THEIR_CODE))
def test_with_over_without_ratio_in_the_authors_code(cell, point):
    lo, hi = RATIO_IN_THEIR_CODE[cell][point]
    for order in ORDERS:
        without, with_ = (
            np.mean([r[point] for r in authors(c, order)["per_seed"]]) for c in (cell, cell + "/special")
        )
        assert lo <= with_ / without <= hi


@pytest.mark.parametrize("cell", ["beyond_theorem/L6", "ssm_in_nn/L6"])
@pytest.mark.parametrize("special", [False, True])
def test_authors_code_prints_the_papers_numbers(cell, special):
    """The paper's headline numbers (docs/science.md §2; the L=6 cells) are what their notebook prints: the
    mean over seeds of the post-optimum callback's last logged error. The paper's number lies in
    the range of that mean over their two runs (3 significant digits; measured: beyond L6 0.1936
    and 0.2212 vs 0.194, 16.599 and 16.618 vs 16.61; network L6 1.612e-3 and 1.563e-3 vs 1.61e-3,
    0.0519 and 0.0553 vs 0.0539)."""
    name = cell + ("/special" if special else "")
    paper = table1.PAPER[(table1.PRESETS[name].setting, special)]
    printed = [np.mean([r["error_last_logged"] for r in authors(name, order)["per_seed"]]) for order in ORDERS]
    assert min(printed) * (1 - 5e-3) <= paper <= max(printed) * (1 + 5e-3)


@pytest.mark.parametrize("cell", ["beyond_theorem/L6", "beyond_theorem/L10", "ssm_in_nn/L6", "ssm_in_nn/L10"])
@pytest.mark.parametrize("special", [False, True])
def test_their_logs_give_their_notebooks_saved_output(cell, special):
    """``table1.AUTHORS_NOTEBOOK`` (the means their notebooks printed, saved in their repository) is
    what their code gives at the last logged update: it lies within 0.5% of the range of our two
    Keras re-runs' means there (float32 rounding and TensorFlow versions make the rest; measured:
    inside the range in 5 cells, 0.2% outside for ssm_in_nn/L10, 1e-4 for its special cell),
    except ssm_in_nn/L6 without special sequences: 1.8% above, through seed 4541, which rounding
    decides (3.1e-4 and 9.9e-5 in our two re-runs of their code)."""
    name = cell + ("/special" if special else "")
    cfg = table1.PRESETS[name]
    saved = table1.AUTHORS_NOTEBOOK[(cfg.setting, cfg.L, special)]
    logged = [np.mean([r["error_last_logged"] for r in authors(name, order)["per_seed"]]) for order in ORDERS]
    tol = 2e-2 if name == "ssm_in_nn/L6" else 5e-3
    assert min(logged) * (1 - tol) <= saved <= max(logged) * (1 + tol)
