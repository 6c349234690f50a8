"""The realworld experiment (docs/science.md §4): a tiny end-to-end run and the protocol's invariants, the
t-interval, and the report (table and readable PNG)."""

import math
from dataclasses import replace

import jax
import numpy as np
import pytest

from conftest import write_fake_cifar
from implicitbias.experiments import realworld as rw
from implicitbias.tasks import classifier_poisoning as cp
from implicitbias.models import make_classifier
from implicitbias.poison.groups import masked_direction
from implicitbias.report import realworld as report_rw
from implicitbias.core.stats import t_interval
from implicitbias.runtime.store import Store

TINY = replace(rw.PRESETS["s4d/digits/mean"], d_model=8, d_state=4, n_layers=1, epochs=2, n_train=100, n_targets=20,
               poison_frac=0.2, iterations=3, restarts=1, extra_epochs=1, max_rounds=1, seeds=(0, 1))


@pytest.fixture(scope="module")
def seed0():
    return cp.run_seed(TINY, 0)


@pytest.fixture(scope="module")
def record(seed0):
    # the same as rw.run(TINY), reusing seed 0 (run() is exactly collect over run_seed)
    return cp.collect(TINY, [seed0.record, cp.run_seed(TINY, 1).record], 1.0)


def _leaves(model):
    import equinox as eqx

    return jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))


def test_every_run_starts_from_the_same_initialisation(seed0):
    fresh = _leaves(make_classifier(TINY.model_config, 0))
    assert set(seed0.inits) == set(rw.VARIANTS)
    for name, init in seed0.inits.items():
        got = _leaves(init)
        assert len(got) == len(fresh)
        for a, b in zip(got, fresh):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    # and training moved them (the trained models differ from the initialisation)
    trained = _leaves(seed0.models["poisoned"])
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(trained, fresh))


def test_poisons_keep_labels_and_carry_the_stored_delta(seed0):
    ds = seed0.data
    pool = seed0.record["arrays"]["poison_idx"]
    n = ds.x_train.shape[0]
    assert pool.size == TINY.n_poisons and np.unique(pool).size == pool.size
    for name, ps in seed0.sets.items():
        x, y = np.asarray(ps.x), np.asarray(ps.y)
        assert x.shape[0] == n + pool.size  # duplicate mode: clean set + perturbed copies
        np.testing.assert_array_equal(x[:n], ds.x_train)
        np.testing.assert_array_equal(y[:n], ds.y_train)
        np.testing.assert_array_equal(y[n:], ds.y_train[pool])  # clean labels
        # float32 rounding bound: x + delta is stored rounded, then x is subtracted: within
        # eps32 max|x + delta| <= 1.2e-7 * 3.3 = 4e-7 of delta (measured 1.2e-7); atol 1e-5 against a
        # budget of 0.67 still catches a wrong or missing perturbation
        np.testing.assert_allclose(x[n:] - ds.x_train[pool], seed0.record["arrays"][f"delta_{name}"], atol=1e-5)


def test_matched_perturbation_respects_the_budget_in_model_units(seed0):
    ds = seed0.data
    std, mean = float(ds.meta["std"].reshape(-1)[0]), float(ds.meta["mean"].reshape(-1)[0])
    eps = seed0.record["budget"]["eps_model"]
    assert eps == pytest.approx(TINY.eps / std)
    d = seed0.record["arrays"]["delta_poisoned"]
    # the float64 budget clipped in float32: float32(eps) is within eps32 / 2 (relative) of eps
    assert np.abs(d).max() <= eps * (1 + 1e-5)
    # an effect: sign-Adam steps end on the box's face (max |delta| = eps exactly, measured)
    assert np.abs(d).max() > 0.5 * eps  # the attack used its budget
    # clip=True: perturbed pixels stay in the raw range [0, 16]; un-standardising in float32 costs
    # ~3 eps32 * 16 = 6e-6 (measured: exactly 0 and 16); 1e-3 raw units still catches a missed clip
    raw = (ds.x_train[seed0.record["arrays"]["poison_idx"]] + d) * std + mean
    assert raw.min() >= -1e-3 and raw.max() <= cp.RAW_RANGE + 1e-3


def test_controls_have_the_matched_per_poison_l2_norm(seed0):
    a = seed0.record["arrays"]
    norm = lambda v: np.sqrt((v.reshape(v.shape[0], -1).astype(float) ** 2).sum(1))
    ref = norm(a["delta_poisoned"])
    # float32 rounding bound: the control is rescaled by ||delta|| / ||r||, two float32 norms of <= 64
    # squares, each within 64 eps32 / 2 = 3.8e-6 (relative, any summation order): rtol 1e-5 (measured
    # 1.6e-7). A control rescaled per set instead of per poison is off by O(1).
    for name in ("uniform", "end"):
        np.testing.assert_allclose(norm(a[f"delta_{name}"]), ref, rtol=1e-5)
    L = a["delta_end"].shape[1]
    n_last = math.ceil(TINY.last_frac * L)
    assert np.all(a["delta_end"][:, : L - n_last] == 0)
    assert np.all(a["delta_uniform"][:, : L - n_last] != 0)


def test_recorded_energy_share_matches_the_stored_deltas(record):
    m, arr = record.metrics, record.arrays
    n_last = math.ceil(TINY.last_frac * arr["delta_poisoned"].shape[2])
    for name in ("poisoned", "uniform", "end"):
        d = arr[f"delta_{name}"].astype(float)  # (seeds, P, L, C)
        per_pos = (d ** 2).sum(axis=(1, 3))
        share = per_pos[:, -n_last:].sum(1) / per_pos.sum(1)
        # float32 (the library) vs float64 (here): a ratio of two float32 sums of nonnegative terms,
        # 20 per position then 64 positions in NumPy's 8-way blocks: <= 2 (19 + 64/8 + 3) eps32 = 7e-6
        # relative, whatever the order; rtol 1e-5 (measured 5e-8)
        np.testing.assert_allclose(m[f"{name}_energy_share"], share, rtol=1e-5)
    assert m["end_energy_share"] == pytest.approx([1.0, 1.0])  # exactly 1 (no energy outside the end)


def test_record_shape_and_values(record):
    m = record.metrics
    assert m["seeds"] == [0, 1]
    for v in rw.VARIANTS:
        for q in ("test_acc", "test_loss", "target_acc", "train_loss"):
            vals = m[f"{v}_{q}"]
            assert len(vals) == 2 and all(np.isfinite(vals))
        assert all(0 <= a <= 1 for a in m[f"{v}_test_acc"])
    assert all(0 <= x <= 2 for x in m["brew_matching_mean"])  # 1 - cos lies in [0, 2] (measured 0.70, 1.54)
    assert record.arrays["delta_poisoned"].shape == (2, TINY.n_poisons, 64, 1)
    assert record.arrays["target_idx"].shape == (2, TINY.n_targets)


def test_t_interval_against_scipy():
    from scipy import stats

    mean, half = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    # closed forms in float64 (pytest.approx's rel 1e-6 >> eps64): t_{0.975,4} s / sqrt(n), SciPy's interval
    assert half == pytest.approx(2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5))  # t_{0.975,4} s/sqrt(n)
    vals = [0.91, 0.95, 0.97, 0.93]
    lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
    m2, h2 = t_interval(vals)
    assert (m2 - h2, m2 + h2) == pytest.approx((lo, hi))
    assert math.isnan(t_interval([0.5])[1])


def test_config_validation_names_the_field():
    for field, value in (("model", "s5"), ("readout", "max"), ("eps", 0.0), ("mode", "add"), ("epochs", 0),
                         ("poison_frac", 1.5), ("seeds", ())):
        with pytest.raises(ValueError, match=field):
            replace(TINY, **{field: value})
    with pytest.raises(ValueError, match="clip"):
        replace(TINY, standardize="feature")
    ours = {f"{m}/digits/{r}" for m in ("s4d", "lru", "mamba2") for r in ("mean", "last")}
    authors = {f"{f}/{m}/{d}" for f in ("authors", "authors-cpu") for m in ("s4d", "lru", "mamba2")
               for d in ("digits", "mnist1d", "italypower")}
    cifar = {f"authors/{m}/cifar10" for m in ("s4d", "lru", "mamba2")}  # data_dir from --set
    assert set(rw.PRESETS) == ours | authors | cifar
    assert all(len(c.seeds) >= 5 for c in rw.PRESETS.values())


def test_report_table_and_png(record, tmp_path):
    store = Store(tmp_path)
    store.save(rw.NAME, TINY, record, preset="s4d/digits/mean", wall_seconds=1.0)
    rows = report_rw.rows(list(store.runs(rw.NAME)))
    assert len(rows) == 1 and rows[0]["experiment"] == rw.NAME and rows[0]["preset"] == "s4d/digits/mean"
    r = rows[0]
    # the same float64 mean of two numbers, computed twice (<= 1 ulp apart): pytest.approx's defaults
    assert r["clean_test_acc_mean"] == pytest.approx(np.mean(record.metrics["clean_test_acc"]))
    assert r["overrides"]  # TINY differs from the preset
    md = report_rw.markdown(rows, tmp_path)
    png = tmp_path / "figures" / rw.NAME / "clean_vs_poisoned.png"
    assert not png.exists() and "clean_vs_poisoned.png" not in md  # rendering Markdown draws nothing
    assert "| preset | variant | test acc |" in md and "| s4d/digits/mean * | poisoned |" in md
    # the paired-difference line carries this row's own verdict, computed from its intervals
    line = next(x for x in md.splitlines() if x.startswith("| s4d/digits/mean * | 2 |"))
    assert line.endswith(f"| {report_rw.verdict(r)} |")
    assert f"{100 * r['diff_err_poisoned_clean_mean']:.2f}" in line
    assert report_rw.figures(list(store.runs(rw.NAME)), rows, tmp_path / "figures" / rw.NAME) == [png]
    md = report_rw.markdown(rows, tmp_path)
    assert png.exists() and "figures/realworld/clean_vs_poisoned.png" in md
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_sweep_rows_get_their_own_table(record, tmp_path):
    store = Store(tmp_path)
    store.save(rw.NAME, TINY, record, preset="s4d/digits/mean", wall_seconds=1.0)
    swept = replace(TINY, eps=2.0)
    store.save(rw.NAME, swept, record, preset="s4d/digits/mean[eps=2.0]", wall_seconds=1.0)
    rows = report_rw.rows(list(store.runs(rw.NAME)))
    row = next(r for r in rows if report_rw.is_sweep_row(r))
    assert row["overrides"]["eps"] == 2.0  # compared with the base preset s4d/digits/mean
    md = report_rw.markdown(rows, tmp_path)
    line = next(l for l in md.splitlines() if l.startswith("| s4d/digits/mean | eps=2.0 |"))
    assert f"{100 * row['clean_test_acc_mean']:.2f}" in line and report_rw.short_verdict(row) in line
    assert "| s4d/digits/mean * | poisoned |" in md  # the plain run keeps the main tables
    assert "| s4d/digits/mean[eps=2.0]" not in md


def test_compiled_group_direction_equals_the_library_target_direction(seed0):
    import equinox as eqx

    from implicitbias.poison import target_direction

    ds = seed0.data
    tidx = seed0.record["arrays"]["target_idx"]
    x_target, y_target = ds.x_test[tidx], ds.y_test[tidx]
    model = seed0.models["clean"]
    g = seed0.groups[0]
    w = np.zeros(tidx.size, np.float32)
    w[g.targets] = 1.0
    got = masked_direction(model, x_target, y_target, w)
    want = eqx.filter_jit(target_direction)(cp.loss_only, model, x_target[g.targets], y_target[g.targets], "untargeted")
    # float32 rounding bound: the same gradient with the targets summed under a 0/1 mask (20 rows) or
    # alone (here 2 rows): other float32 accumulation orders through a one-block network, k eps32
    # sum_i |g_i| per entry with k ~ 20 + the network's depth; atol 1e-6 (~8 eps32 of gradients ~1)
    # and rtol 1e-4 (~840 eps32) hold that, measured <= 6e-3 of the tolerance. A wrong mask or a
    # mean over all 20 rows instead of the group's is off by >= 10x.
    for a, b in zip(_leaves(got), _leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # about 23 s (a whole brew + retrain); the loader's checks stay fast in test_cli_help_and_limits
def test_cifar10_path_on_fake_pickles_keeps_the_per_channel_budget_and_range(tmp_path):
    """The full-size path (sequential CIFAR-10 from a local directory, 3 channels, 1,024 steps) runs
    end to end on tiny fake data; every perturbation respects the raw ℓ∞ budget in each channel and
    keeps perturbed pixels inside [0, 1]."""
    write_fake_cifar(tmp_path, n_per_batch=8, n_test=12)
    cfg = replace(TINY, dataset="cifar10", data_dir=str(tmp_path), n_train=40, n_targets=6, eps=8 / 255, seeds=(0,))
    assert cfg.model_config.d_input == 3
    out = cp.run_seed(cfg, 0)
    ds = out.data
    std, mean = np.asarray(ds.meta["std"], float), np.asarray(ds.meta["mean"], float)  # (1, 3)
    assert ds.x_train.shape == (40, 1024, 3)
    pool = out.record["arrays"]["poison_idx"]
    delta = out.record["arrays"]["delta_poisoned"]
    raw_delta = delta * std
    # float32 rounding of the budget eps / std and back (a few eps32 relative, far under 1e-5); the
    # budget used is an effect (sign-Adam ends on the box's face); the raw range [0, 1] up to the
    # float32 rounding of un-standardising, ~3 eps32 = 4e-7 < 1e-5
    assert np.abs(raw_delta).max() <= 8 / 255 * (1 + 1e-5)
    assert np.abs(raw_delta).max() > 0.5 * 8 / 255 / (std.max() / std.min())  # the budget is used
    raw = (ds.x_train[pool] + delta) * std + mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    for v in rw.VARIANTS:
        assert 0.0 <= out.record[v]["test_acc"] <= 1.0


def test_cifar10_config_errors():
    with pytest.raises(ValueError, match="needs data_dir"):  # checked when loading: presets may leave it to --set
        replace(TINY, dataset="cifar10", eps=8 / 255).load(0)
    with pytest.raises(ValueError, match="eps must be in"):
        replace(TINY, dataset="cifar10", data_dir="/x", eps=4.0, n_targets=10)
    with pytest.raises(ValueError, match="dataset must be"):
        replace(TINY, dataset="mnist")


def test_verdict_follows_the_intervals_and_flags_underfitting():
    row = {"diff_err_poisoned_clean_mean": 0.013, "diff_err_poisoned_clean_ci": 0.004,
           "diff_err_poisoned_uniform_mean": 0.010, "diff_err_poisoned_uniform_ci": 0.008,
           "poisoned_fits_per_seed": [1.0] * 5}
    assert report_rw.short_verdict(row) == "**effect**" and report_rw.verdict(row).startswith("effect:")
    assert "under-fitting" not in report_rw.verdict(row)
    row["poisoned_fits_per_seed"] = [1.0, 0.0, 1.0, 1.0, 0.0]
    assert report_rw.short_verdict(row) == "effect, not fit" and "only 3/5 seeds" in report_rw.verdict(row)
    row["diff_err_poisoned_uniform_ci"] = 0.011  # the uniform-control interval now covers 0
    assert report_rw.short_verdict(row) == "none" and report_rw.verdict(row).startswith("no significant effect")
    row["diff_err_poisoned_clean_mean"] = -0.013
    assert report_rw.short_verdict(row) == "reverse"


def test_cli_shows_a_line_per_finished_seed(tmp_path):
    from typer.testing import CliRunner

    from implicitbias import cli

    sets = [
        f"--set={k}={getattr(TINY, k)}"
        for k in (
            "d_model",
            "d_state",
            "n_layers",
            "epochs",
            "n_train",
            "n_targets",
            "poison_frac",
            "iterations",
            "extra_epochs",
            "max_rounds",
        )
    ]
    res = CliRunner().invoke(
        cli.app,
        ["run", "realworld", "--preset", "s4d/digits/mean", "--seeds", "0,1", *sets, "--runs-dir", str(tmp_path)],
    )
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "realworld seed 0 (1/2) done" in text and "realworld seed 1 (2/2) done" in text
    stored = list(Store(tmp_path).runs(rw.NAME))
    acc = 100 * stored[0].metrics["poisoned_test_acc"][1]
    assert f"poisoned {acc:.2f}%" in text


def test_export_runs_writes_every_stored_run_and_its_rows(record, tmp_path):
    """``scripts/export_runs.py`` (the machine-made ``results/<name>.json``): each stored run's config,
    per-seed metrics and meta, and the report's rows, read back equal to what the store holds."""
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("export_runs", root / "scripts" / "export_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    store = Store(tmp_path / "runs")
    assert mod.main([rw.NAME, "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "x.json")]) == 2
    store.save(rw.NAME, TINY, record, preset="s4d/digits/mean", wall_seconds=1.0)
    out = tmp_path / "r.json"
    assert mod.main([rw.NAME, "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    (run,) = data["runs"]
    stored = next(store.runs(rw.NAME))
    assert run["preset"] == "s4d/digits/mean" and run["config"] == stored.config and run["meta"] == stored.meta
    # read back from JSON: float64 round-trips exactly (repr); approx's defaults only absorb an ulp
    assert run["metrics"]["poisoned_test_acc"] == pytest.approx(record.metrics["poisoned_test_acc"])
    assert len(data["rows"]) == len(report_rw.rows([stored]))
    assert data["rows"][0]["clean_test_acc_mean"] == pytest.approx(np.mean(record.metrics["clean_test_acc"]))
    assert mod.main([rw.NAME, "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "n.json"),
                     "--presets", "lru/digits/mean"]) == 2  # no run of that preset
    assert mod.main([rw.NAME, "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--drop",
                     "clean_test_acc", "clean_test_acc_mean"]) == 0
    slim = json.loads(out.read_text())
    assert slim["dropped"] == ["clean_test_acc", "clean_test_acc_mean"]
    assert "clean_test_acc" not in slim["runs"][0]["metrics"] and "clean_test_acc_mean" not in slim["rows"][0]
    assert slim["runs"][0]["metrics"]["poisoned_test_acc"] == run["metrics"]["poisoned_test_acc"]
