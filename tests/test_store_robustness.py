"""The store under damage, full and read-only disks, two writers at once, and file modes. Every test
here uses stored records of a fake experiment: nothing is trained."""

import errno
import json
import multiprocessing as mp
import os
import stat
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from implicitbias import cli
from implicitbias import experiments as experiments_mod
from implicitbias.experiments import table1
from implicitbias.record import Record
from implicitbias.runtime.runner import run_all
from implicitbias.runtime.store import Store, StoreError

from _store_writer import CONFIG, save_many  # isort: skip  (tests/ is on sys.path, as for conftest)

TINY = replace(table1.PRESETS["beyond_theorem/L6"], seeds=(200,), max_steps=300, log_every=50)
TINY_SPECIAL = replace(table1.PRESETS["beyond_theorem/L6/special"], seeds=(200,), max_steps=300, log_every=50)
runner = CliRunner()


class Fake:
    """table1's name, presets and config with a run that trains nothing and counts its calls."""

    NAME, PRESETS, Config = table1.NAME, table1.PRESETS, table1.Config

    def __init__(self, value=1.0):
        self.calls, self.value = 0, value

    def run(self, config):
        self.calls += 1
        v = self.value * (2.0 if config.special else 1.0)
        return Record({"error_mean": v, "error_std": 0.0, "error": [v], "seeds": list(config.seeds)},
                      {"x": np.arange(50.0)})


def _stored(tmp_path, *configs):
    store, exp = Store(tmp_path), Fake()
    run_all(exp, {f"p{i}": c for i, c in enumerate(configs)}, store)
    return store, exp


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def _drop_config_field(path):
    cfg = json.loads(path.read_text())
    del cfg["config"]["lr"]
    path.write_text(json.dumps(cfg))


DAMAGE = {
    "metrics truncated": lambda d: _truncate(d / "metrics.json", 40),
    "config garbage": lambda d: (d / "config.json").write_bytes(b"\x00\xffnot json at all"),
    "config without its config": lambda d: (d / "config.json").write_text('{"experiment": "table1"}'),
    "config missing a field": lambda d: _drop_config_field(d / "config.json"),
    "arrays truncated": lambda d: _truncate(d / "arrays.npz", (d / "arrays.npz").stat().st_size // 2),
    "meta missing": lambda d: (d / "meta.json").unlink(),
}


# -- 1. damaged runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_run_is_recomputed_and_kept_aside(kind, tmp_path):
    store, exp = _stored(tmp_path, TINY)
    d = store.run_dir("table1", TINY)
    DAMAGE[kind](d)
    damaged = {p.name: p.read_bytes() for p in d.iterdir()}
    warnings = []
    store = Store(tmp_path, warn=warnings.append)
    assert not store.is_complete("table1", TINY)
    (out,) = run_all(exp, {"p0": TINY}, store)
    assert exp.calls == 2 and not out.skipped  # recomputed, not "stored, skipped"
    assert store.is_complete("table1", TINY) and next(store.runs("table1")).metrics["error"] == [1.0]
    (aside,) = [p for p in (tmp_path / "table1").iterdir() if p.name.startswith(".damaged-")]
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == damaged  # moved aside as it was
    assert len(warnings) == 1 and str(d) in warnings[0] and aside.name in warnings[0]


def test_force_keeps_a_damaged_copy_and_deletes_a_good_one(tmp_path):
    store, exp = _stored(tmp_path, TINY)
    run_all(exp, {"p0": TINY}, store, force=True)
    assert [p.name for p in (tmp_path / "table1").iterdir()] == [store.run_dir("table1", TINY).name]
    DAMAGE["metrics truncated"](store.run_dir("table1", TINY))
    run_all(exp, {"p0": TINY}, Store(tmp_path, warn=lambda m: None), force=True)
    assert exp.calls == 3 and store.is_complete("table1", TINY)
    assert len([p for p in (tmp_path / "table1").iterdir() if p.name.startswith(".damaged-")]) == 1


def _one_warning(text, d):
    lines = [ln for ln in set(text.splitlines()) if "damaged" in ln]
    assert len(lines) == 1 and str(d) in lines[0] and "Traceback" not in text, text
    return lines[0]


@pytest.mark.parametrize("kind", ["metrics truncated", "config without its config", "arrays truncated"])
def test_report_and_plot_skip_a_damaged_run_with_one_warning(kind, tmp_path):
    store, _ = _stored(tmp_path, TINY, TINY_SPECIAL)
    bad = store.run_dir("table1", TINY_SPECIAL)
    DAMAGE[kind](bad)
    res = runner.invoke(cli.app, ["report", "--json", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)  # stdout stays JSON; the warning is on stderr
    assert [r["special"] for r in rows] == [False]
    assert "warning" in _one_warning(res.stderr, bad)
    res = runner.invoke(cli.app, ["report", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 0 and "| p0" in res.stdout and "p1" not in (tmp_path / "report.md").read_text()
    _one_warning(res.stderr, bad)
    res = runner.invoke(cli.app, ["plot", "table1", "--runs-dir", str(tmp_path)])
    _one_warning(res.stderr, bad)  # (exit 2: fake table1 runs have no figures)
    res = runner.invoke(cli.app, ["plot", str(bad), "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and f"damaged run {bad}" in res.stderr and len(set(res.stderr.splitlines())) == 1


def test_cli_run_recomputes_a_damaged_run(tmp_path, monkeypatch):
    fake = Fake()
    monkeypatch.setattr(experiments_mod, "get", lambda name: fake)
    args = ["run", "table1", "--preset", "beyond_theorem/L6", "--seeds", "200", "--runs-dir", str(tmp_path)]
    assert runner.invoke(cli.app, args).exit_code == 0 and fake.calls == 2
    bad = Store(tmp_path).run_dir("table1", replace(table1.PRESETS["beyond_theorem/L6"], seeds=(200,)))
    DAMAGE["metrics truncated"](bad)
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 0 and fake.calls == 3, res.output
    assert res.output.count("stored, skipped") == 1 and "damaged run" in res.output


# -- 2. full and read-only disks --------------------------------------------------------------------


def _simulate(monkeypatch, root, code):
    """Creating files or directories under ``root`` fails with ``code`` (ENOSPC, EROFS, EACCES), as on
    a full or read-only file system (what every store and report write starts with)."""
    root = os.path.realpath(root)
    real_open, real_mkdir = os.open, os.mkdir

    def under(p):
        return os.path.realpath(p).startswith(root)

    def fake_open(path, flags, *a, **k):
        if flags & os.O_CREAT and under(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *a, **k)

    def fake_mkdir(path, *a, **k):
        if under(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def _read_only(monkeypatch, root):
    """``root`` made read-only with chmod; where that does not stop writes (as root), EROFS simulated."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o555)
    try:
        (root / "probe").write_text("x")
    except PermissionError:
        return
    (root / "probe").unlink()
    _simulate(monkeypatch, root, errno.EROFS)


@pytest.fixture
def restore_mode(tmp_path):
    yield
    for p in [tmp_path, *tmp_path.rglob("*")]:
        if p.is_dir():
            os.chmod(p, 0o755)


@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_unwritable_store_fails_before_computing(disk, tmp_path, monkeypatch, restore_mode):
    store, exp = _stored(tmp_path, TINY)  # one run stored: skipping it needs no write
    if disk == "full":
        _simulate(monkeypatch, tmp_path, errno.ENOSPC)
    else:
        _read_only(monkeypatch, tmp_path / "table1")
    assert run_all(exp, {"p0": TINY}, store)[0].skipped
    with pytest.raises(StoreError) as info:
        run_all(exp, {"p0": TINY, "p1": TINY_SPECIAL}, store)
    assert exp.calls == 1  # nothing computed
    msg = str(info.value)
    assert str(tmp_path / "table1") in msg and "errno" in msg and "\n" not in msg
    assert ("ENOSPC" if disk == "full" else ("EROFS" if "EROFS" in msg else "EACCES")) in msg


def test_cli_unwritable_store_is_one_line_exit_1_or_2(tmp_path, monkeypatch, restore_mode):
    monkeypatch.setattr(experiments_mod, "get", lambda name: Fake())
    monkeypatch.chdir(tmp_path)
    _read_only(monkeypatch, tmp_path / "runs")
    args = ["run", "table1", "--preset", "beyond_theorem/L6"]
    res = runner.invoke(cli.app, args)  # the default store: the environment's fault
    assert res.exit_code == 1, res.output
    (line,) = set(res.stderr.splitlines())
    assert line.startswith("error: cannot write to runs/table1") and "errno" in line
    res = runner.invoke(cli.app, args + ["--runs-dir", str(tmp_path / "runs")])  # given by the user
    assert res.exit_code == 2 and "Traceback" not in res.output
    (tmp_path / "afile").write_text("")
    res = runner.invoke(cli.app, args + ["--runs-dir", str(tmp_path / "afile")])  # not a directory
    assert res.exit_code == 2 and len(set(res.stderr.splitlines())) == 1 and "afile" in res.stderr


def test_disk_full_while_saving_keeps_the_old_run(tmp_path, monkeypatch):
    store, exp = _stored(tmp_path, TINY)
    before = {p.name: p.read_bytes() for p in store.run_dir("table1", TINY).iterdir()}

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(StoreError, match=r"cannot write to .*: No space left on device \(ENOSPC, errno 28\)"):
        run_all(exp, {"p0": TINY}, store, force=True)
    assert {p.name: p.read_bytes() for p in store.run_dir("table1", TINY).iterdir()} == before
    assert [p.name for p in (tmp_path / "table1").iterdir()] == [store.run_dir("table1", TINY).name]
    monkeypatch.setattr(experiments_mod, "get", lambda name: exp)
    res = runner.invoke(cli.app, ["run", "table1", "--preset", "beyond_theorem/L6", "--seeds", "200",
                                  "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output and "ENOSPC" in res.stderr


@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_report_on_an_unwritable_disk_keeps_the_previous_report(disk, tmp_path, monkeypatch, restore_mode):
    _stored(tmp_path, TINY, TINY_SPECIAL)
    assert runner.invoke(cli.app, ["report", "--runs-dir", str(tmp_path)]).exit_code == 0
    before = {n: (tmp_path / n).read_bytes() for n in ("report.md", "report.html")}
    run_all(Fake(value=3.0), {"p0": TINY}, Store(tmp_path), force=True)  # the next report would differ
    if disk == "full":
        _simulate(monkeypatch, tmp_path, errno.ENOSPC)
    else:
        _read_only(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli.app, ["report"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    (line,) = set(res.stderr.splitlines())
    assert line.startswith("error: cannot write to ") and "errno" in line
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# -- 4. two writers ----------------------------------------------------------------------------------


@pytest.mark.slow  # 6 s; moved to make test-all to keep the fast suite under 180 s
def test_two_processes_saving_one_run(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=save_many, args=(str(tmp_path), barrier, 150, who, errors)) for who in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    failed = []
    while not errors.empty():
        failed.append(errors.get())
    assert not failed and all(p.exitcode == 0 for p in procs), failed
    store = Store(tmp_path)
    assert store.is_complete("store_writer", CONFIG) and next(store.runs()).metrics["writer"] in (1, 2)
    assert [p.name for p in (tmp_path / "store_writer").iterdir()] == [store.run_dir("store_writer", CONFIG).name]


def test_run_dir_is_the_config_hash_and_a_non_finite_config_loads(tmp_path):
    from implicitbias import __version__
    from implicitbias.record import config_hash

    store = Store(tmp_path)
    assert store.run_dir("table1", TINY).name == config_hash("table1", TINY, __version__)
    odd = replace(CONFIG, lr=float("inf"))  # a config without validation: its inf is stored as null
    store.save("store_writer", odd, Record({"v": 1.0}, {}), preset="p", wall_seconds=0.0)
    assert store.is_complete("store_writer", odd)


def test_second_writer_without_replace_keeps_the_first_result(tmp_path):
    store = Store(tmp_path)
    store.save("table1", TINY, Record({"v": 1.0}, {}), preset="p", wall_seconds=0.0)
    store.save("table1", TINY, Record({"v": 2.0}, {}), preset="p", wall_seconds=0.0, replace=False)
    assert next(store.runs("table1")).metrics == {"v": 1.0}
    store.save("table1", TINY, Record({"v": 3.0}, {}), preset="p", wall_seconds=0.0)
    assert next(store.runs("table1")).metrics == {"v": 3.0}


# -- 5. file modes -----------------------------------------------------------------------------------


def test_run_directories_and_report_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        store, _ = _stored(tmp_path, TINY)
        assert runner.invoke(cli.app, ["report", "--runs-dir", str(tmp_path)]).exit_code == 0
    finally:
        os.umask(old)
    d = store.run_dir("table1", TINY)
    assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()} == {0o644}
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o644
