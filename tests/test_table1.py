import functools
import json
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicitbias.experiments import table1
from implicitbias.runtime.overrides import parse_overrides
from implicitbias.tasks import teacher_student as ts

P = table1.PRESETS


@pytest.mark.parametrize("name", ["beyond_theorem/L6/special", "ssm_in_nn/L10/special", "per_theorem/L9/special"])
def test_special_examples_carry_exactly_the_teachers_labels(name):
    cfg = P[name]
    X = ts.training_inputs(cfg, cfg.seeds[0])
    tch = ts.teacher(cfg)
    y = tch(X)
    n_base = 1 if cfg.setting == "per_theorem" else cfg.n_baseline
    special = X[n_base:]
    assert special.shape[0] > 0
    # mass only at position L-2, and the label is the teacher's output there, by hand
    assert jnp.all(special[:, : cfg.L - 2] == 0) and jnp.all(special[:, cfg.L - 1] == 0)
    u = special[:, cfg.L - 2]
    if cfg.setting == "ssm_in_nn":
        expected = (cfg.m / 2) * jnp.maximum(u, 0)  # y* = (m/2) relu(sum_t u_t)
    else:
        expected = tch.impulse_response(2)[1] * u  # h*_2 u_{L-2}
    np.testing.assert_allclose(y[n_base:], expected, rtol=1e-12)


def test_baseline_rows_shared_between_with_and_without():
    without, with_ = P["beyond_theorem/L10"], P["beyond_theorem/L10/special"]
    Xa = ts.training_inputs(without, 1200)
    Xb = ts.training_inputs(with_, 1200)
    assert jnp.array_equal(Xa, Xb[: Xa.shape[0]])
    assert jnp.all(Xa[:, 7:] == 0) and jnp.all(Xa[:, :7] != 0)  # N(0,1) at positions 0:L-3


def test_data_stream_is_the_authors_generate_inputs():
    """data_rng="numpy": RandomState(seed) fills each baseline row's nonzero positions, row by row,
    then each special row's (the authors' generate_inputs, written out here independently)."""
    cfg = P["beyond_theorem/L10/special"]
    np.random.seed(1203)
    rows = []
    for _ in range(cfg.n_baseline):
        r = np.zeros(cfg.L)
        r[0:cfg.L - 3] = np.random.normal(0, 1, size=cfg.L - 3)
        rows.append(r)
    for _ in range(cfg.n_special):
        r = np.zeros(cfg.L)
        r[cfg.L - 2] = np.random.normal(0, 1)
        rows.append(r)
    np.testing.assert_array_equal(np.asarray(ts.training_inputs(cfg, 1203)), np.array(rows))
    Xt = ts.held_out_inputs(P["ssm_in_nn/L6"], 4540)
    np.testing.assert_array_equal(np.asarray(Xt), np.random.RandomState(4552).normal(0, 1, (2000, 40)))
    jax_rows = ts.training_inputs(replace(cfg, data_rng="jax"), 1203)
    assert jax_rows.shape == (18, 10) and not np.allclose(jax_rows, np.array(rows))


def test_keras_init_structure():
    """init_rng="keras": one N(0,1) stream per seed feeds every weight (keras_init module): B and C
    hold the same magnitudes (B sorted, C in reversed draw order), a = sorted |diag| of the (d,d)
    draw, entries 0/1 tied, warm start added; the network's head equals its first layer."""
    from implicitbias.core.keras_init import seeded_normal

    cfg = P["ssm_in_nn/L6"]
    net = ts.keras_init(cfg, 4541)
    z = np.abs(seeded_normal((cfg.d,), 4541, cfg.sd_BC).astype(np.float64))
    f32 = lambda v: np.float32(v).astype(np.float64)
    np.testing.assert_array_equal(np.asarray(net.ssm.C), f32(z[::-1]))
    B = np.sort(z)[::-1].copy()
    B[1] = B[0] - cfg.diff
    np.testing.assert_array_equal(np.asarray(net.ssm.B), f32(B + cfg.warm_init))
    diag = np.sort(np.abs(np.diag(seeded_normal((cfg.d, cfg.d), 4541, cfg.sd_A)).astype(np.float64)))[::-1]
    np.testing.assert_array_equal(np.asarray(net.ssm.a)[2:], f32(diag[2:] + cfg.warm_init))
    np.testing.assert_array_equal(np.asarray(net.head), np.asarray(net.layers[0])[:, 0])
    np.testing.assert_array_equal(np.asarray(net.layers[1])[:, 0], np.asarray(net.head))  # Keras row 0 = prefix
    other = ts.keras_init(cfg, 4540)
    assert not np.allclose(other.head, net.head)


# beyond_theorem/L6/special per seed where the authors read it: their Keras code re-run here (TF 2.21,
# scripts/authors_keras/logs: 5.749, 28.87-28.95, 17.121, 14.654). Seed 201 is sensitive (float32
# rounding moves it by 0.3% between their two runs; ours in float64 is 28.36, 2% below): checked
# in test_authors_keras in float32.
AUTHORS_L6_SPECIAL = {200: 5.75, 204: 17.1, 205: 14.65}


def test_beyond_theorem_L6_reproduces_the_paper():
    """The authors' procedure on the smaller beyond-Theorem cell (the authors' data and init streams, error read
    after 1401 of the 1500 extra updates, where their notebook reads it): every seed fits, with special
    sequences the mean error is >= 10x the mean without and within 2% of the paper's 16.61 (measured
    16.47), per seed within 1% of the authors' code; without them within 20% of the paper's 0.194
    (measured 0.218: seed 201 is 0.583, in the authors' two runs 0.484 and 0.595, whose means are
    0.194 and 0.221). The error at the end (1500) equals their logged end errors seed by seed."""
    without = table1.run(P["beyond_theorem/L6"]).metrics
    with_ = table1.run(P["beyond_theorem/L6/special"]).metrics
    assert all(without["reached_eps"]) and all(with_["reached_eps"])
    for m in (without, with_):
        assert np.array_equal(np.subtract(m["measured_step"], m["hit_step"]), [1401] * 4)
        assert np.array_equal(np.subtract(m["steps"], m["hit_step"]), [1500] * 4)
    assert with_["error_mean"] >= 10 * without["error_mean"]
    # Against the paper: its numbers come from the authors' unseeded float32 runs, and their own two
    # runs here differ in seed 201, which rounding decides (means 16.62 / 16.64 with, 0.194 / 0.221
    # without): 2% and 20% hold that spread of their runs (0.1% and 14%), not this machine's distance.
    assert with_["error_mean"] == pytest.approx(table1.PAPER[("beyond_theorem", True)], rel=0.02)
    assert without["error_mean"] == pytest.approx(table1.PAPER[("beyond_theorem", False)], rel=0.2)
    # Per seed, the seeds rounding does not decide: their values written to 3-4 digits (<= 0.3% of
    # rounding) and their float32 against our float64 (measured <= 3e-5 relative): 1% holds both.
    for seed, theirs in AUTHORS_L6_SPECIAL.items():
        assert with_["error"][P["beyond_theorem/L6/special"].seeds.index(seed)] == pytest.approx(theirs, rel=0.01)
    # still moving after the fit: the end value (1500 extra updates) is 10-20% lower, as in their own
    # logs (scripts/authors_keras/logs: same seeds, end errors within 1e-3 relative of ours, the float32
    # vs float64 bound above with room), and not what the paper reports
    logs = Path(__file__).resolve().parents[1] / "scripts" / "authors_keras" / "logs"
    theirs = json.loads((logs / "beyond_theorem__L6__special.json").read_text())["per_seed"]
    theirs_end = {r["seed"]: r["error_end"] for r in theirs}
    for seed in AUTHORS_L6_SPECIAL:
        ours_end = with_["error_end"][P["beyond_theorem/L6/special"].seeds.index(seed)]
        assert ours_end == pytest.approx(theirs_end[seed], rel=1e-3)
    assert np.mean(with_["error_end"]) < 0.9 * table1.PAPER[("beyond_theorem", True)]


def test_measurement_point_rule():
    """``measure_at`` = -1 reads the error after the authors' last logged update: their post-fit
    callback logs at 0-based epochs e with e % log_every == 0, after update e + 1 (checked here
    against a brute-force scan of those epochs); any other value is an update count after the fit."""
    for extra in (1, 2, 99, 100, 101, 1400, 1500, 5000, 20000):
        for log_every in (1, 7, 100):
            logged = [e + 1 for e in range(extra) if e % log_every == 0]
            assert ts.last_logged_update(extra, log_every) == logged[-1]
    assert ts.last_logged_update(1500, 100) == 1401 and ts.last_logged_update(5000, 100) == 4901
    assert ts.last_logged_update(0, 100) == 0
    assert P["beyond_theorem/L10"].measured_update == 1401 and P["ssm_in_nn/L6"].measured_update == 4901
    assert replace(P["beyond_theorem/L10"], extra_steps=700, log_every=50).measured_update == 651
    assert replace(P["beyond_theorem/L10"], measure_at=1500).measured_update == 1500
    for bad in (-2, 1501):
        with pytest.raises(ValueError, match="measure_at"):
            replace(P["beyond_theorem/L10"], measure_at=bad)


# short runs shared with test_report_draws_the_error_after_the_fit (one stop rule: compiled once per
# test session, cached on disk)
SHORT = replace(P["beyond_theorem/L6"], seeds=(200, 204), extra_steps=300)


@pytest.mark.slow  # about 10 s (two stop rules compiled); the loop's own check: test_optim_train
def test_error_is_read_at_the_measurement_point():
    """A run reads ``error`` after ``hit + measure_at`` updates (default: 201 of 300, the last logged)
    and ``error_end`` after all extra updates: measuring at a point equals ending the run there, and
    a run read at its end (measure_at = extra_steps) gives the same value twice."""
    at = table1.run(replace(SHORT, special=True)).metrics
    cut = table1.run(replace(SHORT, special=True, extra_steps=201)).metrics  # 201: its measurement point is its end
    assert np.array_equal(np.subtract(at["measured_step"], at["hit_step"]), [201, 201])
    np.testing.assert_array_equal(at["error"], cut["error_end"])
    np.testing.assert_array_equal(cut["error"], cut["error_end"])
    assert np.array_equal(np.subtract(at["steps"], at["hit_step"]), [300, 300])
    assert min(abs(a - b) for a, b in zip(at["error"], at["error_end"])) > 1e-3  # the two points differ here


def test_gd_init_follows_spec():
    cfg = replace(P["beyond_theorem/L6"], init_rng="jax")
    m = ts.ssm_init(cfg, ts.task_keys(200)["init"])
    a, B = np.asarray(m.a) - cfg.warm_init, np.asarray(m.B) - cfg.warm_init
    assert np.isclose(a[0] - a[1], cfg.diff, rtol=1e-6) and np.isclose(B[0] - B[1], cfg.diff, rtol=1e-6)
    assert np.all(np.diff(a[1:]) <= 0) and np.all(a >= 0) and np.all(np.asarray(m.C) >= 0)


def test_per_theorem_init_stream():
    a = ts.per_theorem_init(P["per_theorem/L7"], 242)
    raw = np.sort(1e-3 * np.random.RandomState(242).rand(10))[::-1]
    assert a[0] == raw[0] and np.isclose(a[1], raw[0] - P["per_theorem/L7"].diff) and np.array_equal(a[2:], raw[2:])


@pytest.mark.parametrize("field,value,match", [
    ("L", 0, "L must be"), ("d", -3, "d must be"), ("eps", 0.0, "eps must be > 0"), ("lr", -1.0, "lr must be"),
    ("seeds", (), "seeds must not be empty"), ("extra_sequences", ((0.0, float("nan"), 0, 0, 0, 0),), "NaN"),
    ("extra_sequences", ((1.0, 2.0),), "length"), ("setting", "nope", "setting must be"),
    ("special_positions", (9,), "special_positions"), ("dtype", "float16", "dtype must be"),
    ("init_jitter", -1e-7, "init_jitter must be"), ("init_jitter", float("nan"), "init_jitter must be"),
    ("error_from", 0, "error_from must be"), ("error_from", 41, "error_from must be"),
])
def test_bad_config_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        replace(P["beyond_theorem/L6"], **{field: value})


def test_per_theorem_rejects_gd_only_fields():
    for field, value in [("dtype", "float32"), ("init_jitter", 1e-7)]:
        with pytest.raises(ValueError, match="per_theorem is gradient flow"):
            replace(P["per_theorem/L7"], **{field: value})


def test_jitter_init_is_a_seeded_relative_perturbation():
    """Every parameter moves by a relative N(0, scale) factor; same (seed, index), same draw."""
    model = ts.keras_init(P["ssm_in_nn/L6"], 4541)
    j = ts.jitter_init(model, 1e-3, 4541, 0)
    again, other = ts.jitter_init(model, 1e-3, 4541, 0), ts.jitter_init(model, 1e-3, 4541, 1)
    rel = np.concatenate([np.ravel(np.asarray(b) / np.asarray(a) - 1)
                          for a, b in zip(jax.tree_util.tree_leaves(model), jax.tree_util.tree_leaves(j))])
    # statistical bounds on n > 250 N(0, 1e-3^2) draws: the std's standard error is 1e-3 / sqrt(2n) < 4.5e-5,
    # the mean's 1e-3 / sqrt(n) < 6.4e-5, so 0.8-1.2e-3 and |mean| < 3e-4 are > 4 standard errors wide
    assert rel.size > 250 and 0.8e-3 < rel.std() < 1.2e-3 and abs(rel.mean()) < 3e-4
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(j), jax.tree_util.tree_leaves(again)))
    assert not np.array_equal(j.ssm.a, other.ssm.a)


def test_jitter_index_picks_each_seeds_perturbation():
    """Seeds (4541, 4541) at positions 0, 1 get the draws of jitter_index (5, 2): the initial models of
    a cloud run in batches are those of the one-batch run; an index per seed is required."""
    cfg = replace(P["ssm_in_nn/L6"], seeds=(4541, 4541), init_jitter=1e-3)
    models, _ = ts.gd_batch(replace(cfg, jitter_index=(5, 2)))
    base = ts.initial_model(cfg, 4541)
    for row, index in enumerate((5, 2)):
        want = ts.jitter_init(base, 1e-3, 4541, index).ssm.a
        np.testing.assert_array_equal(np.asarray(models.ssm.a[row]), np.asarray(want, np.float32))
    with pytest.raises(ValueError, match="jitter_index must hold one index >= 0 per seed"):
        replace(cfg, jitter_index=(1,))


def test_overrides_parse_and_reject():
    o = parse_overrides(table1.Config, ["lr=0.5", "special=true", "seeds=1,2", "extra_sequences=[[0,0,0,0,1,0]]"])
    assert o == {"lr": 0.5, "special": True, "seeds": (1, 2), "extra_sequences": ((0, 0, 0, 0, 1, 0),)}
    for bad in ["lr", "lr=abc", "nope=1", "special=maybe", "extra_sequences=[[0,"]:
        with pytest.raises(ValueError):
            parse_overrides(table1.Config, [bad])


def test_extra_sequence_changes_the_fit():
    """A user-given special sequence is labelled by the teacher and enters the training set."""
    cfg = replace(P["per_theorem/L7"], extra_sequences=((0, 0, 0, 0, 0, 1.0, 0),), seeds=(242,))
    X = ts.training_inputs(cfg, 242)
    assert X.shape == (2, 7) and X[1, 5] == 1.0


def test_per_theorem_L7_reproduces_authors_numbers():
    """docs/science.md §2a: the authors' procedure gives 1.270e-3 (without) and 5.010e-2 (with); measured
    1.2712e-3 and 5.0105e-2 (0.1% and 0.01% off). The difference is the solvers' (our stiff Diffrax
    solve in a rescaled clock against their SciPy odeint), the same on every CPU: the flow does not
    amplify rounding (test_flow: a relative 1e-7 change of the start moves it by ~1e-7). Tolerance
    0.15%: that difference plus the 4-digit printout's rounding (<= 0.04%)."""
    without = table1.run(P["per_theorem/L7"]).metrics
    with_ = table1.run(P["per_theorem/L7/special"]).metrics
    assert all(without["solved"]) and all(with_["solved"])
    assert all(without["reached_eps"]) and all(with_["reached_eps"])
    assert without["error_mean"] == pytest.approx(1.270e-3, rel=1.5e-3)
    assert with_["error_mean"] == pytest.approx(5.010e-2, rel=1.5e-3)
    assert max(without["train_loss"] + with_["train_loss"]) < 1e-20


def test_teacher_fields_set_the_labelling_ssm():
    """A teacher of the user's (docs/science.md §1): labels, the teacher's impulse response and the network
    teacher follow the closed form h*_k = sum_i C*_i B*_i a*_i^(k-1); B*, C* default to ones."""
    cfg = replace(P["beyond_theorem/L6/special"], teacher_a=(0.9, -0.5), teacher_B=(1.0, 2.0), teacher_C=(0.5, 1.0))
    k = np.arange(1, 41)
    h = 0.5 * 0.9 ** (k - 1) + 2.0 * (-0.5) ** (k - 1)
    np.testing.assert_allclose(ts.teacher(cfg).impulse_response(40), h, rtol=1e-13)
    X = np.asarray(ts.training_inputs(cfg, 200))
    y = X @ h[: cfg.L][::-1]  # y_L = sum_k h_k u_{L-k}
    models, datas = ts.gd_batch(replace(cfg, seeds=(200,)))
    np.testing.assert_allclose(np.asarray(datas["y"][0])[: len(y)], y, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(datas["h_star"][0]), h, rtol=1e-13)
    ones = replace(cfg, teacher_B=(), teacher_C=())
    np.testing.assert_allclose(ts.teacher(ones).impulse_response(5), 0.9 ** k[:5] / 0.9 + (-0.5) ** k[:5] / -0.5)
    net = replace(P["ssm_in_nn/L6"], teacher_a=(0.8,))
    Xn = jax.random.normal(jax.random.PRNGKey(0), (7, 6))
    inner = Xn @ (0.8 ** np.arange(6))[::-1]
    np.testing.assert_allclose(ts.teacher(net)(Xn), net.m / 2 * np.maximum(inner, 0), rtol=1e-12)


def test_explicit_default_teacher_gives_identical_runs():
    """Spelling out a setting's default teacher (a* = B* = C* = 1; per Theorem (1, 0), (1, sqrt(d-1)))
    changes no number: the teacher fields feed the same labels and targets."""
    base = replace(P["beyond_theorem/L6/special"], seeds=(200,), max_steps=300, log_every=100)
    a, b = table1.run(base).metrics, table1.run(replace(base, teacher_a=(1.0,), teacher_C=(1.0,))).metrics
    assert a["error"] == b["error"] and a["train_loss"] == b["train_loss"]
    pt = P["per_theorem/L7"]
    explicit = replace(pt, teacher_a=(1.0, 0.0), teacher_B=(1.0, 3.0), teacher_C=(1.0, 3.0))
    np.testing.assert_array_equal(ts.teacher(pt).impulse_response(20), ts.teacher(explicit).impulse_response(20))


@pytest.mark.parametrize("fields,match", [
    (dict(teacher_a=(0.9, 0.5), teacher_B=(1.0,)), "teacher_B must have the length of teacher_a"),
    (dict(teacher_C=(1.0,)), "teacher_B and teacher_C need teacher_a"),
    (dict(teacher_a=(1.01,)), "teacher_a must satisfy"),
    (dict(teacher_a=(0.5,), teacher_B=(float("inf"),)), "teacher_B must hold finite numbers"),
    (dict(t_final=float("inf")), "t_final must be a finite number"),
    (dict(seeds=(True,)), "seeds must be non-negative integers"),
])
def test_bad_teacher_and_corner_values(fields, match):
    with pytest.raises(ValueError, match=match):
        replace(P["per_theorem/L7"], **fields)


@pytest.mark.slow  # ~9 s of flow; the fast suite checks reached_eps on the GD cells and the report's rows
def test_flow_that_never_leaves_its_plateau_is_not_fitted():
    """per_theorem/L7 at L=8, d=15 (seed 500): the flow reaches t_final still on its plateau (train
    loss 1, the error exactly 1/15). It must count as not fitted, and the report must say so."""
    from implicitbias.report import table1 as section
    from implicitbias.runtime.store import StoredRun

    cfg = replace(P["per_theorem/L7"], L=8, d=15, seeds=(500,))
    m = table1.run(cfg).metrics
    assert m["solved"] == [True] and m["train_loss"][0] == pytest.approx(1.0, rel=1e-6)
    assert m["reached_eps"] == [False] and m["error"][0] == pytest.approx(1 / 15, rel=1e-6)
    from pathlib import Path

    from implicitbias.record import config_to_dict
    run = StoredRun(Path("runs/table1/x"), "table1", "per_theorem/L7", config_to_dict(cfg), m, {})
    rows = section.rows([run])
    md = section.markdown(rows)
    assert rows[0]["reached_eps"] == [False] and "**0/1**" in md and "**Not fitted:** per_theorem/L7" in md


def test_beyond_theorem_small_run_values():
    """A short GD run: the logged loss decreases, gamma^(0) is exactly 0 without special sequences
    and not with them, the final error agrees with the impulse response of the stored state."""
    base = replace(P["beyond_theorem/L6"], seeds=(200,), max_steps=12000)
    rec = table1.run(base)
    rec_s = table1.run(replace(base, special=True))
    loss = rec.arrays["log_loss"][0]
    assert loss[-1] < 0.05 * loss[0]
    assert np.all(rec.arrays["log_gamma0"][0] == 0.0)
    assert np.any(np.abs(rec_s.arrays["log_gamma0"][0]) > 1e-3)
    assert rec.arrays["log_steps"][0][-1] == rec.metrics["steps"][0]
    assert np.isclose(rec.arrays["log_error"][0][-1], rec.metrics["error_end"][0])


@pytest.mark.slow
@pytest.mark.parametrize("size", ["L7", "L9"])
def test_per_theorem_reproduction(size):
    for special, target in [(False, table1.AUTHORS_RERUN), (True, table1.AUTHORS_RERUN)]:
        cfg = P[f"per_theorem/{size}" + ("/special" if special else "")]
        m = table1.run(cfg).metrics
        # the solvers' difference (<= 0.1%, the same on every CPU) plus the printout's rounding: see
        # test_per_theorem_L7_reproduces_authors_numbers
        assert m["error_mean"] == pytest.approx(target[(cfg.L, special)], rel=1.5e-3)


GD_CELLS = ["beyond_theorem/L6", "beyond_theorem/L10", "ssm_in_nn/L6", "ssm_in_nn/L10", "float64/ssm_in_nn/L10"]


@functools.cache
def _cell_metrics(cell: str):
    return table1.run(P[cell]).metrics, table1.run(P[cell + "/special"]).metrics


@pytest.mark.slow
@pytest.mark.parametrize("cell", GD_CELLS)
def test_gd_cells_every_seed_fits(cell):
    without, with_ = _cell_metrics(cell)
    assert all(without["reached_eps"]) and all(with_["reached_eps"])


# Whether special sequences raise the cell's mean error. The network presets train in float32, the
# authors' precision, where ssm_in_nn/L10 gives their notebook's ~2x (0.045 / 0.089; per seed:
# tests/test_authors_keras.py). In our float64 variant they do not (0.235 without, 0.090 with): seed
# 4543 without special sequences then keeps a second entry of A (docs/findings/table1.md).
ORDERING_HOLDS = {"beyond_theorem/L6": True, "beyond_theorem/L10": True, "ssm_in_nn/L6": True, "ssm_in_nn/L10": True,
                  "float64/ssm_in_nn/L10": False}


@pytest.mark.slow
@pytest.mark.parametrize("cell", GD_CELLS)
def test_gd_cells_ordering(cell):
    without, with_ = _cell_metrics(cell)
    assert (with_["error_mean"] > without["error_mean"]) == ORDERING_HOLDS[cell]


def test_network_presets_train_in_the_authors_float32_and_float64_is_a_named_variant():
    """The authors trained in TensorFlow's float32: so do the ssm_in_nn presets; float64/<name> is the
    same config in float64 and nothing else."""
    for name in [n for n in P if n.startswith("ssm_in_nn/")]:
        assert P[name].dtype == "float32"
        assert P["float64/" + name] == replace(P[name], dtype="float64")
    assert all(P[n].dtype == "float64" for n in P if not n.startswith("ssm_in_nn/"))


@pytest.mark.slow
def test_ssm_in_nn_L6_seed_4541_is_decided_by_rounding():
    """ssm_in_nn/L6 seed 4541 without special sequences, 32 copies each perturbed by a relative 1e-7
    (float32 rounding) at initialisation: some end where the authors' float32 run ends (error
    8.7e-5, second |a_i| 0.11), most where our unperturbed float64 run ends (0.13, second |a_i|
    0.42). The two part during the jump of the first entry (updates 15,000-15,100), so this seed,
    and with it the cell's mean, is set by rounding, in their implementation as in ours."""
    rec = table1.run(replace(P["float64/ssm_in_nn/L6"], seeds=(4541,) * 32, init_jitter=1e-7))
    err = np.asarray(rec.metrics["error"])
    assert all(rec.metrics["reached_eps"])
    # counts of the two end states among 32 perturbed copies (measured 9 of 64 below 1e-3, 54 above
    # 0.05): the claim is that both states occur, at least 1 and half of the copies, not the shares
    assert np.sum(err < 1e-3) >= 1 and np.sum(err > 0.05) >= 16




@pytest.mark.slow  # 6 s; moved to make test-all to keep the fast suite under 180 s
def test_report_draws_the_error_after_the_fit(tmp_path):
    """The report's GD panel: each seed's logged error against updates after its fit, a dot at the
    reported value (measured_update after the fit) and a cross at the end; the section links it."""
    from implicitbias.report import table1 as section
    from implicitbias.report.common import pyplot
    from implicitbias.runtime.store import Store

    store = Store(tmp_path)
    for name, cfg in (("beyond_theorem/L6", SHORT), ("beyond_theorem/L6/special", replace(SHORT, special=True))):
        store.save("table1", cfg, table1.run(cfg), preset=name, wall_seconds=1.0)
    runs = list(store.runs("table1"))
    rows = section.rows(runs)
    assert [r["measured_update"] for r in rows] == [201, 201] and [r["extra_steps"] for r in rows] == [300, 300]
    written = section.figures(runs, rows, tmp_path / "figures" / "table1")
    name = "beyond_theorem_L6_seeds-_200__204__extra_steps-300__after_fit.png"
    assert [p.name for p in written] == [name]
    assert f"(figures/table1/{name})" in section.markdown(rows, tmp_path)

    run = next(r for r in runs if not r.config["special"])
    m = run.metrics
    fig, ax = pyplot().subplots()
    section._after_fit_panel(ax, run, rows[0], "t")
    line, dot, cross = ax.get_lines()[:3]
    hit = m["hit_step"][0]
    logged = run.arrays()["log_steps"][0]
    assert np.array_equal(line.get_xdata(), logged[logged >= hit] - hit)
    assert (dot.get_xdata()[0], dot.get_ydata()[0]) == (201, m["error"][0])
    assert (cross.get_xdata()[0], cross.get_ydata()[0]) == (300, m["error_end"][0])
    pyplot().close(fig)
