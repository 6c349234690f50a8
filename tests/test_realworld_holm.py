"""The real-world section's statistics: paired t-tests of poisoned minus clean / uniform test
error, Holm over every comparison of the section, the authors'-protocol verdicts, figure and
``results/realworld-authors.json``, on stored records with known numbers (no training)."""

import json

import numpy as np
import pytest
from scipy import stats

from implicitbias.experiments import realworld as rw
from implicitbias.record import Record
from implicitbias.report import realworld as report_rw
from implicitbias.core.stats import holm
from implicitbias.runtime.store import Store

SEEDS = [0, 1, 2, 3, 4]


def _record(shift_clean, shift_uniform, fits=(True,) * 5, seed=0):
    """Metrics of a realworld run whose poisoned test error exceeds clean by ``shift_clean`` and the uniform
    control by ``shift_uniform`` (plus per-seed noise)."""
    rng = np.random.default_rng(seed)
    clean = 0.9 + 0.01 * rng.standard_normal(5)
    uniform = clean - 0.002 * rng.standard_normal(5)
    poisoned = np.minimum(clean - shift_clean, uniform - shift_uniform) + 0.003 * rng.standard_normal(5)
    acc = {"clean": clean, "poisoned": poisoned, "uniform": uniform, "end": clean + 0.001}
    m = {"seeds": SEEDS, "variants": list(rw.VARIANTS), "brew_matching_mean": list(rng.uniform(0, 0.1, 5)),
         "clean_train_s": [1.0] * 5, "brew_s": [2.0] * 5, "wall_seconds": 12.0}
    for v in rw.VARIANTS:
        m[f"{v}_test_acc"] = acc[v].tolist()
        m[f"{v}_fits"] = list(fits) if v == "poisoned" else [True] * 5
        m[f"{v}_rounds"] = [0] * 5
        if v != "clean":
            m[f"{v}_energy_share"] = list(rng.uniform(0.2, 0.3, 5))
            m[f"{v}_last_row_ratio"] = list(rng.uniform(0.1, 0.2, 5))
    return Record(m)


@pytest.fixture
def stored(tmp_path):
    store = Store(tmp_path)
    cases = {"authors-cpu/s4d/digits": _record(0.05, 0.05), "authors-cpu/lru/digits": _record(0.0, 0.0, seed=1),
             "authors-cpu/mamba2/digits": _record(0.05, 0.05, fits=(True, False, True, True, True), seed=2),
             "s4d/digits/mean": _record(0.0, 0.0, seed=3)}
    for preset, rec in cases.items():
        store.save(rw.NAME, rw.PRESETS[preset], rec, preset=preset, wall_seconds=12.0)
    runs = list(store.runs(rw.NAME))
    return runs, {r["preset"]: r for r in report_rw.rows(runs)}, cases


def test_p_values_are_paired_t_tests_and_holm_covers_the_whole_section(stored):
    runs, rows, cases = stored
    family = []
    for preset, rec in cases.items():
        err = {v: 1 - np.asarray(rec.metrics[f"{v}_test_acc"]) for v in rw.VARIANTS}
        for b in report_rw.COMPARISONS:
            want = stats.ttest_rel(err["poisoned"], err[b]).pvalue
            # float64: one closed form evaluated by two codes (see test_stats): ~1e3 eps64, rel 1e-10
            assert rows[preset][f"p_poisoned_{b}"] == pytest.approx(want, rel=1e-10)
            family.append((preset, b, want))
    adjusted = holm([p for *_, p in family])
    for (preset, b, _), q in zip(family, adjusted):
        assert rows[preset][f"p_holm_vs_{b}"] == pytest.approx(q, rel=1e-10)
    for r in rows.values():
        assert r["holm_family"] == 8  # 4 rows x 2 comparisons, the ours-preset row included
        assert r["p_holm"] == max(r["p_holm_vs_clean"], r["p_holm_vs_uniform"])


def test_authors_verdicts_need_both_controls_holm_and_fit(stored):
    _, rows, _ = stored
    assert report_rw.authors_verdict(rows["authors-cpu/s4d/digits"]).startswith(
        "poisoning raises test error beyond both controls at equal fit, Holm-corrected p < 0.05")
    assert report_rw.authors_verdict(rows["authors-cpu/lru/digits"]).startswith("no:")
    assert "only 4/5 poisoned models fit" in report_rw.authors_verdict(rows["authors-cpu/mamba2/digits"])
    # a 5-point effect on 5 seeds that is significant uncorrected but not after Holm would read "no"
    r = dict(rows["authors-cpu/s4d/digits"], p_holm_vs_uniform=0.2)
    r["p_holm"] = 0.2
    assert report_rw.authors_verdict(r).startswith("no:")


def test_authors_table_figure_and_results_json(stored, tmp_path):
    runs, rows, cases = stored
    row_list = report_rw.rows(runs)
    fig_dir = tmp_path / "figures" / rw.NAME
    written = report_rw.figures(runs, row_list, fig_dir)
    assert fig_dir / report_rw.AUTHORS_FIGURE in written
    md = report_rw.markdown(row_list, tmp_path)
    assert "### The authors' protocol" in md and report_rw.AUTHORS_FIGURE in md
    section = md.split("### The authors' protocol")[1].splitlines()
    line = next(x for x in section if x.startswith("| authors-cpu/s4d/digits | 5 |"))
    assert line.endswith(f"| {report_rw.authors_verdict(rows['authors-cpu/s4d/digits'])} |")
    assert not any(x.startswith("| s4d/digits/mean") for x in section)  # our recipe stays in the main tables
    res = report_rw.authors_results(row_list, runs)
    json.dumps(res, allow_nan=False)  # strict JSON (no NaN: 5 seeds give finite p-values)
    got = {p["preset"]: p for p in res["presets"]}
    assert set(got) == {p for p in cases if p.startswith("authors")}
    for preset, p in got.items():
        acc = cases[preset].metrics
        for v in rw.VARIANTS:
            # the same float64 subtraction (<= 1 ulp apart): assert_allclose's rtol 1e-7
            np.testing.assert_allclose(p[f"{v}_error"], 1 - np.asarray(acc[f"{v}_test_acc"]))
        assert p["fit"] == [bool(f) for f in acc["poisoned_fits"]]
        assert p["end_energy_share"] == acc["poisoned_energy_share"]
        assert p["last_row_ratio"] == acc["poisoned_last_row_ratio"]
        assert p["config"]["model"] == p["model"] and p["dataset"] == "digits"
        assert p["p_holm"] == rows[preset]["p_holm"] and p["wall_seconds"] == 12.0
    assert [got[k]["effect"] for k in sorted(got)] == [False, False, True]  # lru, mamba2 (not fit), s4d
