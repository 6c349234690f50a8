"""A bad CIFAR ``data_dir``, a config too large for memory and a wrong guess
at what to type each end in one clear line (exit 2) or in help that lists the choices.

Everything runs the CLI in-process and stops before any training, so the file costs ~2 s."""

import os
import pickle
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_fake_cifar
from implicitbias import cli
from implicitbias.runtime import footprint
from implicitbias.datasets import BadDataError, MissingDataError, load_cifar10
from implicitbias.experiments import EXPERIMENTS, chains, realworld, table1

runner = CliRunner()
CIFAR = ["run", "realworld", "--preset", "s4d/digits/mean", "--set", "dataset=cifar10", "--set", "eps=0.0314"]


def _one_error_line(res) -> str:
    """The run exited with 2 and wrote exactly one error line, without a traceback, on stderr (besides
    warnings, e.g. that an override made two presets one config)."""
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(set(lines)) == 1 and "Traceback" not in res.output, res.stderr  # CliRunner may echo stderr twice
    return lines[0]


# ---------------------------------------------------------------------------------------------
# a bad CIFAR data_dir
# ---------------------------------------------------------------------------------------------


def test_missing_cifar_dir_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "no-such-dir"
    line = _one_error_line(runner.invoke(cli.app, CIFAR + ["--set", f"data_dir={missing}", "--runs-dir",
                                                          str(tmp_path / "runs")]))
    assert str(missing) in line and "not found" in line


def test_cifar_files_of_random_bytes_are_one_line_naming_the_file(tmp_path):
    data = tmp_path / "cifar"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (data / name).write_bytes(rng.integers(0, 256, 4096, dtype="uint8").tobytes())
    line = _one_error_line(runner.invoke(cli.app, CIFAR + ["--set", f"data_dir={data}", "--runs-dir",
                                                          str(tmp_path / "runs")]))
    assert os.path.join(str(data), "data_batch_1") in line and "not a CIFAR-10" in line


@pytest.mark.parametrize("damage", ["random", "truncated", "not_a_dict", "bad_labels", "float_data", "a_dir"])
def test_loader_names_the_damaged_file(tmp_path, damage):
    write_fake_cifar(tmp_path)
    path = tmp_path / "data_batch_3"
    good = path.read_bytes()
    if damage == "random":
        path.write_bytes(os.urandom(3000))
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "not_a_dict":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    elif damage == "bad_labels":
        path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), "uint8"), b"labels": ["a", "b"]}))
    elif damage == "float_data":
        path.write_bytes(pickle.dumps({b"data": np.full((2, 3072), 0.5), b"labels": [0, 1]}))
    else:
        path.unlink()
        path.mkdir()
    err = MissingDataError if damage == "a_dir" else BadDataError
    with pytest.raises(err, match="data_batch_3") as info:
        load_cifar10(tmp_path)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_missing_cifar_dir_is_both_file_not_found_and_value_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path / "nowhere")
    assert isinstance(info.value, ValueError)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MissingDataError, match="is not a directory"):
        load_cifar10(tmp_path / "file")


def test_cifar_sizes_beyond_the_data_are_clear(tmp_path):
    write_fake_cifar(tmp_path, n_per_batch=2, n_test=3)
    with pytest.raises(BadDataError, match="n_train=20 .* only 10 images"):
        load_cifar10(tmp_path, n_train=20)


def test_documented_cifar_command_passes_validation_and_the_digits_eps_explains_itself():
    """README: ``--preset s4d/digits/mean --set dataset=cifar10 --set data_dir=...`` needs
    ``--set eps=0.0314`` (pixels in 0..1); without it the error says so."""
    base = realworld.PRESETS["s4d/digits/mean"]
    cfg = replace(base, dataset="cifar10", data_dir="/data/cifar", eps=0.0314)
    assert cfg.eps == 0.0314 and cfg.model_config.d_input == 3
    with pytest.raises(ValueError, match=r"eps must be in \(0, 1.0\].*eps=0.0314.*got 4.0"):
        replace(base, dataset="cifar10", data_dir="/data/cifar")


# ---------------------------------------------------------------------------------------------
# sizes that cannot fit
# ---------------------------------------------------------------------------------------------


def _no_compute(monkeypatch):
    """Make any experiment's run fail loudly: the refusals must come before computing."""
    for exp in EXPERIMENTS.values():
        monkeypatch.setattr(exp, "run", lambda config: pytest.fail("computed a config that should be refused"))


@pytest.mark.parametrize("args,largest", [
    (["run", "table1", "--set", "d=100000000"], "d=100000000"),
    (["run", "chains", "--set", "max_new_tokens=1000000000"], "T=1000000000"),
    (["run", "dynamics", "--preset", "standalone/L6", "--set", "log_every=1", "--set", "max_steps=100000000000"],
     "trajectory logs"),
    (["run", "realworld", "--preset", "s4d/digits/mean", "--set", "d_model=100000000"], "activations"),
])
def test_oversized_configs_are_refused_before_computing(args, largest, tmp_path, monkeypatch):
    _no_compute(monkeypatch)
    runs = tmp_path / "runs"
    line = _one_error_line(runner.invoke(cli.app, args + ["--runs-dir", str(runs)]))
    assert "refused before computing" in line and "of memory available" in line and largest in line, line
    assert not runs.exists()  # nothing stored, not even a directory


def test_every_preset_fits_in_a_small_machine():
    for name, exp in EXPERIMENTS.items():
        assert callable(getattr(exp, "footprint_bytes", None)), name
        for preset, cfg in exp.PRESETS.items():
            # the paper's Table 2 presets (authors/<model>/cifar10: user-supplied data, a GPU advised) are
            # sized for a big machine, the rest for a small one
            limit = 32 * 2**30 if getattr(cfg, "dataset", "") == "cifar10" else 256 * 2**20
            assert 0 < exp.footprint_bytes(cfg) < limit, (name, preset, exp.footprint_bytes(cfg))


def test_check_refuses_exactly_above_the_available_memory():
    cfg = table1.PRESETS["beyond_theorem/L6"]
    need = table1.footprint_bytes(cfg)
    footprint.check(table1, {"cell": cfg}, available=need)
    with pytest.raises(ValueError, match="table1 cell refused before computing.*largest: "):
        footprint.check(table1, {"cell": cfg}, available=need - 1)

    class NoHook:
        NAME = "nohook"

    footprint.check(NoHook, {"cell": cfg}, available=0)  # experiments without an estimate always pass


def test_estimates_grow_with_the_sizes_that_matter():
    base = table1.PRESETS["beyond_theorem/L6"]
    small, big = (table1.footprint_bytes(replace(base, d=d, max_steps=1000)) for d in (100, 1000))
    # closed forms on integer byte counts (no rounding): 10x d gives ~100x bytes, 50x leaves the linear terms room
    assert big > 50 * small  # the (d, d) kernel and the Keras draws are quadratic in d
    c = chains.PRESETS["train1-3/test1-3"]
    f = [chains.footprint_bytes(replace(c, max_new_tokens=t)) for t in (5, 50, 500)]
    assert f[0] < f[1] < f[2] and f[2] > 10 * f[0]  # integer byte counts; the teacher-forced scores are quadratic in T


def test_available_memory_is_read():
    avail = footprint.available_bytes()
    assert avail is not None and 0 < avail < 2**60


# ---------------------------------------------------------------------------------------------
# help lists the experiments, presets and fields
# ---------------------------------------------------------------------------------------------


def test_top_level_help_lists_the_experiments():
    res = runner.invoke(cli.app, ["--help"])
    assert res.exit_code == 0
    for name, exp in EXPERIMENTS.items():
        assert f"{name} ({len(exp.PRESETS)} presets)" in res.output


def test_run_help_without_experiment_names_them():
    res = runner.invoke(cli.app, ["run", "--help"])
    assert res.exit_code == 0 and "Experiments: " + ", ".join(EXPERIMENTS) in res.output


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_run_experiment_help_lists_presets_and_fields_with_types_and_defaults(name):
    exp = EXPERIMENTS[name]
    res = runner.invoke(cli.app, ["run", name, "--help"])
    assert res.exit_code == 0, res.output
    text = res.output
    assert text != runner.invoke(cli.app, ["run", "--help"]).output
    lines = text.splitlines()
    for preset in exp.PRESETS:
        assert any(line.split()[:1] == [preset] for line in lines), preset
    for f in exp.Config.__dataclass_fields__:
        assert any(line.split()[:1] == [f] for line in lines), f


def test_field_rows_show_type_and_default():
    rows = {line.split()[0]: line.split()[1:] for line in
            runner.invoke(cli.app, ["run", "chains", "--help"]).output.splitlines() if line.startswith("  ")
            and not line.startswith("   ") and len(line.split()) >= 3}  # field rows; descriptions sit deeper
    assert rows["init_std"][:2] == ["float", "1e-08"]
    assert rows["attention"][:2] == ["softmax|linear", "softmax"]
    assert rows["seeds"][:2] == ["list", "of"] and rows["seeds"][3] == "[42,43,44]"
    t1 = runner.invoke(cli.app, ["run", "table1", "--preset", "per_theorem", "--help"]).output
    assert any(line.split()[:3] == ["lr", "float", "0.01"] and "0.001" in line for line in t1.splitlines())
    assert any(line.split()[:2] == ["d", "int"] and "(per preset: 10, 20)" in line for line in t1.splitlines())


def test_mnist1d_is_sized_as_mnist1d():
    """The real-world estimate for MNIST-1D counts its own 5,000 sequences of length 40 (not the digits
    branch, whose test set 1797 - n_train would go negative at n_train = 4000), by hand."""
    cfg = realworld.PRESETS["authors-cpu/s4d/mnist1d"]
    terms = realworld.footprint_terms(cfg)
    data = next(v for k, v in terms.items() if k.startswith("mnist1d data"))
    assert data == 5000 * 40 * 8 + (cfg.n_train + 1000) * 40 * (8 + 4)
    assert all(v > 0 for v in terms.values())
