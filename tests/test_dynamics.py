"""Dynamics (docs/science.md §3): summary numbers on hand-made trajectories, the mechanism on real runs, figures."""

from dataclasses import replace

import numpy as np
import pytest

from implicitbias.experiments import dynamics
from implicitbias.report import dynamics as report_dynamics
from implicitbias.tasks import teacher_student as ts


def test_first_crossing_and_summary_by_hand():
    steps = np.array([[0, 10, 20, 30, -1]])
    # entry 0 grows 0 -> 1 (crosses 0.5 at step 20); entry 1 grows to 0.4 (half = 0.2 reached at 10)
    abs_a = np.full((1, 5, 3), np.nan)
    abs_a[0, :4, 0] = [0.0, 0.3, 0.6, 1.0]
    abs_a[0, :4, 1] = [0.0, 0.25, 0.3, 0.4]
    abs_a[0, :4, 2] = [0.01, 0.01, 0.01, 0.01]
    arrays = {"log_steps": steps, "log_abs_a": abs_a, "a_final": np.array([[1.0, -0.4, 0.01]]),
              "log_gamma0": np.array([[0.0, -2.0, 1.0, 0.5, np.nan]])}
    s = ts.summarize(arrays, n_top=2)
    assert s["n_above_0.1"] == [2] and s["n_above_0.5"] == [1]
    assert s["jump_step"] == [20]
    assert s["max_abs_gamma0"] == [2.0]
    assert s["top_final"] == [[1.0, 0.4]]
    assert s["half_crossing"] == [[20, 10]]
    assert ts.first_crossing(steps[0], abs_a[0, :, 2], 0.5) == -1


@pytest.fixture(scope="module")
def standalone_L6():
    return {sp: dynamics.run(dynamics.PRESETS[f"standalone/L6{sp}"]) for sp in ("", "/special")}


# The authors' dynamics notebooks print the largest |eigenvalues| of A at the end of each run
# (standalone_ssm_dynamics_experiments.ipynb, seed 105, L=6; ssm_in_nn_dynamics_experiments.ipynb,
# seed 4541; standalone_ssm_dim=3_dynamics_experiments.ipynb, seed 1201, L=10).
AUTHORS_FINAL = {
    "standalone/L6": [0.99834, 0.03854, 0.01121],
    "standalone/L6/special": [1.01212, 0.79675, 0.59168, 0.42292],
    "network/L6": [1.0, 0.019836, 0.008895],
    "network/L6/special": [1.02937, 1.01834, 1.00614, 1.00181],
    "authors/teacher_dim3/L10": [0.99798, 0.69480, 0.68704],
}


def test_greedy_low_rank_without_special(standalone_L6):
    """docs/science.md §3: without special sequences one entry jumps to ~1, the rest stay small, effective rank
    <= 2, and gamma^(0) is exactly zero (it only sees the second-to-last input)."""
    m = standalone_L6[""].metrics
    assert all(m["reached_eps"])
    assert max(m["final_effective_rank"]) <= 2.0
    assert all(n == 1 for n in m["n_above_0.5"]) and all(n == 1 for n in m["n_above_0.1"])
    assert all(g == 0.0 for g in m["max_abs_gamma0"])
    assert all(j > 0 for j in m["jump_step"])


def test_special_sequences_spread_the_growth(standalone_L6):
    """With special sequences many entries grow together: effective rank >= 4 and >= 3 entries above 0.1."""
    m = standalone_L6["/special"].metrics
    assert all(m["reached_eps"])
    assert min(m["final_effective_rank"]) >= 4.0
    assert min(m["n_above_0.1"]) >= 3
    assert min(m["max_abs_gamma0"]) > 0.1


# network/L6 (6.5 s) with make test-all, to keep the fast suite under 180 s
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "network/L6" else n
                                  for n in sorted(AUTHORS_FINAL)])
def test_reproduces_the_authors_final_spectra(name, standalone_L6):
    """The presets are the authors' runs: their printed final spectra (read, as theirs, at the last
    logged update after the fit).

    Tolerance 1e-3 absolute: their printout has 4-5 decimals (<= 5e-5) and their float32 run against
    our float64 one differs by float32's rounding carried through the fit, which these runs do not
    amplify (measured: 2.5e-4 or less; on another CPU the float64 run moves by ~1e-12). network/L6 is
    seed 4541, whose small entries rounding decides (docs/authors-procedure.md: copies perturbed by
    1e-7 end in either state; its second entry here 0.0214, theirs 0.0198), so there only the entry
    that jumps to 1 is compared; the rest of its spectrum is not a reproducible number."""
    if name.startswith("standalone/L6"):
        rec = standalone_L6[name.removeprefix("standalone/L6")]
    else:
        rec = dynamics.run(dynamics.PRESETS[name])
    top = rec.metrics["top_final"][0]
    expected = AUTHORS_FINAL[name][:1] if name == "network/L6" else AUTHORS_FINAL[name]
    np.testing.assert_allclose(top[: len(expected)], expected, atol=1e-3)


def test_network_greedy_without_and_spread_with_special():
    """The SSM inside the ReLU network (Keras's Adam) shows the same contrast: one entry near 1 and
    effective rank <= 2 without special sequences, every entry grown (effective rank ~ d) with them."""
    runs = {sp: dynamics.run(dynamics.PRESETS[f"network/L6{sp}"]).metrics for sp in ("", "/special")}
    m = runs[""]
    assert all(m["reached_eps"]) and max(m["final_effective_rank"]) <= 2.0
    assert m["n_above_0.5"] == [1] and m["max_abs_gamma0"] == [0.0]
    w = runs["/special"]
    assert all(w["reached_eps"]) and min(w["final_effective_rank"]) >= 9.0 and min(w["n_above_0.1"]) == 10


@pytest.mark.slow
def test_teacher_dim2_staircase():
    """Teacher dimension 2 at L=10 without special: exactly 2 entries above 0.1, learned one after the
    other (the largest crosses half its final value strictly first), close to a* = (0.99, 0.8)."""
    m = dynamics.run(dynamics.PRESETS["teacher_dim2/L10"]).metrics
    assert m["n_above_0.1"] == [2] * 4
    for top, cross in zip(m["top_final"], m["half_crossing"]):
        assert cross[0] < cross[1]
        # closeness to the teacher a* (how far GD gets in the budget), an effect size, not rounding
        assert top[0] == pytest.approx(0.99, abs=0.02) and top[1] == pytest.approx(0.8, abs=0.03)


def test_teacher_dim_error_starts_at_h2():
    """With B = C = 1 fixed, h_1 = d whatever a is. A student holding exactly the teacher's entries
    (a = (0.99, 0.8, 0, ..., 0)) has error 0 from h_2 on (the presets' error_from=2), and error
    (d - d*) / d* = 9 when h_1 is counted: the closed forms, through the code the runs log with."""
    import jax


    cfg = replace(dynamics.PRESETS["teacher_dim2/L10"], seeds=(0,))
    assert cfg.error_from == 2 and dynamics.PRESETS["authors/teacher_dim2/L10"].error_from == 2
    models, datas = ts.gd_batch(cfg)
    model, data = jax.tree_util.tree_map(lambda x: x[0], (models, datas))
    model = replace(model, a=np.r_[0.99, 0.8, np.zeros(cfg.d - 2)])
    assert float(ts.generalization_error(model, data, cfg.horizon, 2)) == pytest.approx(0.0, abs=1e-15)
    data1 = {**data, "h_star": ts.teacher(cfg).impulse_response(cfg.horizon)}
    assert float(ts.generalization_error(model, data1, cfg.horizon, 1)) == pytest.approx((20 - 2) / 2)


def test_figure_is_a_png_of_the_expected_size(tmp_path, standalone_L6):
    import matplotlib.image

    path = report_dynamics.plot_run(standalone_L6[""].arrays, "standalone/L6", tmp_path / "run.png")
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (9 * 80, 5 * 80)  # figsize (5, 9) inches at 80 dpi
    assert img[..., :3].std() > 0.05  # something was drawn
    runs = standalone_L6[""].arrays, standalone_L6["/special"].arrays
    pair = report_dynamics.plot_pair(*runs, "x", tmp_path / "pair.png")
    assert matplotlib.image.imread(pair).shape[:2] == (9 * 80, 10 * 80)


def test_presets_cover_spec_section_3():
    names = set(dynamics.PRESETS)
    for base in ["standalone/L6", "standalone/L10", "network/L6", "network/L10"] + [
        f"teacher_dim{d}/L{L}" for d in (2, 3, 4) for L in (6, 10)
    ]:
        assert base in names and f"{base}/special" in names
    cfg = dynamics.PRESETS["teacher_dim3/L10"]
    assert cfg.teacher_dim == 3 and not cfg.train_BC and cfg.special_positions == (8,)


def test_fixed_B_C_get_exactly_zero_gradient():
    """train_BC=False: the student starts at B = C = 1 and the loss gives them zero gradient, so no
    optimiser moves them, while a does get a gradient."""
    import jax

    cfg = replace(dynamics.PRESETS["teacher_dim3/L10"], seeds=(0,))
    models, datas = ts.gd_batch(cfg)
    model, data = jax.tree_util.tree_map(lambda x: x[0], (models, datas))
    assert np.all(np.asarray(model.B) == 1.0) and np.all(np.asarray(model.C) == 1.0)
    g = jax.grad(ts.train_loss_a_only)(model, data)
    assert np.all(np.asarray(g.B) == 0.0) and np.all(np.asarray(g.C) == 0.0)
    assert np.abs(np.asarray(g.a)).max() > 0
    g_full = jax.grad(ts.train_loss)(model, data)
    assert np.allclose(g_full.a, g.a) and np.abs(np.asarray(g_full.B)).max() > 0


@pytest.mark.slow
def test_teacher_dim3_staircase():
    """Teacher dimension 3 at L=10 without special: the three teacher entries (0.99, 0.8, 0.5) are
    learned in every seed, one after the other (half-crossing updates strictly increasing)."""
    m = dynamics.run(dynamics.PRESETS["teacher_dim3/L10"]).metrics
    for top, cross, n in zip(m["top_final"], m["half_crossing"], m["n_above_0.1"]):
        assert np.allclose(top[:3], [0.99, 0.8, 0.5], atol=0.01)  # closeness to a*: an effect size
        assert cross[0] < cross[1] < cross[2]
        assert n == 3  # exactly d* entries above 0.1 (docs/science.md §3)


# slow (~9-15 s each: two runs of 10^6 updates; the crossings reach update 258,500): the fast suite
# checks greedy low-rank learning on standalone/L6 and the network, and the spectra of the authors' runs
@pytest.mark.slow
@pytest.mark.parametrize("d_star", [3, 4])
def test_teacher_dim_L6_learned_in_order(d_star):
    """Teacher dimension 3 and 4 at L=6 without special: in every seed the top d* entries cross half
    their final values in order, the largest strictly first; with special sequences the first
    entries cross within a few hundred updates of one another instead."""
    m = dynamics.run(dynamics.PRESETS[f"teacher_dim{d_star}/L6"]).metrics
    for cross in m["half_crossing"]:
        c = cross[:d_star]
        assert min(c) >= 0 and c[0] < c[1] and all(x <= y for x, y in zip(c, c[1:]))
    spread = [max(c[:3]) - min(c[:3]) for c in m["half_crossing"]]
    w = dynamics.run(dynamics.PRESETS[f"teacher_dim{d_star}/L6/special"]).metrics
    assert max(max(c[:3]) - min(c[:3]) for c in w["half_crossing"]) <= 300 < min(spread)


@pytest.fixture(scope="module")
def teacher_dim4_L10():
    """The preset's seeds, and seed 2 (an initial near-tie the preset's seed rule leaves out), run
    together: every seed is its own vmapped run."""
    cfg = dynamics.PRESETS["teacher_dim4/L10"]
    assert 2 not in cfg.seeds
    return cfg.seeds, dynamics.run(replace(cfg, seeds=cfg.seeds + (2,)))


@pytest.mark.slow
def test_teacher_dim4_L10_staircase(teacher_dim4_L10):
    """Teacher dimension 4 at L=10 without special, every preset seed: exactly 4 entries above 0.1,
    near a* = (0.99, 0.8, 0.5, 0.3), learned in the order of docs/science.md §3 (half-crossing updates
    non-decreasing, the largest strictly first)."""
    seeds, rec = teacher_dim4_L10
    m = rec.metrics
    for s in range(len(seeds)):
        top, cross = m["top_final"][s], m["half_crossing"][s]
        assert m["n_above_0.1"][s] == 4
        assert np.allclose(top[:4], [0.99, 0.8, 0.5, 0.3], atol=0.035)  # closeness to a*: an effect size
        assert cross[0] < cross[1] <= cross[2] <= cross[3]


@pytest.mark.slow
def test_teacher_dim4_L10_near_tie_is_learned_together(teacher_dim4_L10):
    """Seed 2, whose 3rd and 4th initial entries are 0.2% apart: the two take off together. The 3rd
    stays at least the 4th at every logged update, both cross half their final values within 5% of
    each other's update, and the 4th, whose half is the smaller level, gets there first: the order
    criterion of docs/science.md §3 cannot hold for a near-tie, which is why the preset's seed rule skips it."""
    seeds, rec = teacher_dim4_L10
    s = len(seeds)
    cfg = dynamics.PRESETS["teacher_dim4/L10"]
    assert ts.top_init_gap(cfg, 2) < 0.005 < dynamics.STAIRCASE_MIN_GAP
    steps, abs_a = rec.arrays["log_steps"][s], rec.arrays["log_abs_a"][s]
    third, fourth = np.argsort(-np.abs(rec.arrays["a_final"][s]))[2:4]
    used = steps >= 0
    assert np.all(abs_a[used, third] >= abs_a[used, fourth])
    assert abs(abs_a[0, third] / abs_a[0, fourth] - 1) < 0.005
    c3, c4 = rec.metrics["half_crossing"][s][2:4]
    assert 0 < c4 < c3 < 1.05 * c4
    assert rec.metrics["n_above_0.1"][s] == 4


def test_staircase_seeds_are_the_first_without_a_near_tie():
    """Every staircase preset's seeds are separated_seeds of its config: each chosen seed's top d*+1
    initial magnitudes are at least STAIRCASE_MIN_GAP apart, each skipped seed has a closer pair."""
    for d_star in (2, 3, 4):
        for L in (6, 10):
            for suffix in ("", "/special"):
                cfg = dynamics.PRESETS[f"teacher_dim{d_star}/L{L}{suffix}"]
                assert cfg.seeds == ts.separated_seeds(cfg, dynamics.STAIRCASE_MIN_GAP)
                for seed in range(max(cfg.seeds) + 1):
                    assert (ts.top_init_gap(cfg, seed) >= dynamics.STAIRCASE_MIN_GAP) == (seed in cfg.seeds)
    assert 2 not in dynamics.PRESETS["teacher_dim4/L10"].seeds  # the rule is not vacuous


def test_top_init_gap_is_read_off_the_trained_models_start():
    """top_init_gap, from the config alone, equals the gap of the |a| the training loop starts from
    (top 5 entries, d* = 4): the stacked models ``gd_batch`` hands to the loop, in the run's precision
    and kernel form, for the preset's seeds and for seed 2. (That the loop logs its start at update 0
    is test_optim_train's; a 200-update run to read that row cost 5 s of compilation.)"""
    cfg = dynamics.PRESETS["teacher_dim4/L10"]
    seeds = cfg.seeds
    models, _ = ts.gd_batch(replace(cfg, seeds=seeds + (2,)))
    for s, seed in enumerate(seeds + (2,)):
        a = np.sort(np.abs(np.asarray(ts.ssm_of(models).a[s])))[::-1][:5]
        assert ts.top_init_gap(cfg, seed) == pytest.approx(np.min(1 - a[1:] / a[:-1]), rel=1e-9)


def test_report_document_draws_links_and_inlines_the_figures(standalone_L6, tmp_path):
    """The whole report over a store: figures are written first (one per run, one pair per preset),
    the Markdown links the pair, the HTML inlines it, and `plot` writes the same files."""
    from typer.testing import CliRunner

    from implicitbias import cli, report
    from implicitbias.runtime.store import Store

    store = Store(tmp_path)
    for sp, rec in standalone_L6.items():
        name = f"standalone/L6{sp}"
        store.save("dynamics", dynamics.PRESETS[name], rec, preset=name, wall_seconds=1.0)
    text, (md, page) = report.write(store, tmp_path)
    fig_dir = tmp_path / "figures" / "dynamics"
    assert sorted(p.name for p in fig_dir.iterdir()) == [
        "standalone_L6.png", "standalone_L6__pair.png", "standalone_L6_special.png"]
    assert "![standalone/L6: without vs with special sequences](figures/dynamics/standalone_L6__pair.png)" in text
    assert md.read_text() == text
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 1 and "missing image" not in html
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    res = CliRunner().invoke(cli.app, ["plot", "dynamics", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 0 and res.output.count("written:") == 3
    res = CliRunner().invoke(cli.app, ["plot", "table1", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and "no stored runs of 'table1'" in res.output
