"""Backends without Ray: the local backend, the retry loop of the Ray backend driven by a
fake pool, the runner's skip / save / salvage logic around any backend, and the one-line errors of
``--backend``. The same with a real Ray instance: ``tests/test_backends_ray.py`` (``make test-ray``)."""

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from implicitbias import __version__, cli
from implicitbias.runtime import backends
from implicitbias.runtime import ray_watchdog as watchdog
from implicitbias.runtime.backends import (
    BackendError,
    Failed,
    Finished,
    LocalBackend,
    Started,
    _Failure,
    _same_version,
    drive,
)
from implicitbias.experiments import table1
from implicitbias.record import Record
from implicitbias.runtime.runner import run_all
from implicitbias.runtime.store import Store

TINY = replace(table1.PRESETS["beyond_theorem/L6"], seeds=(200,), max_steps=300, log_every=50)
GRID = {"a": TINY, "b": replace(TINY, lr=0.02), "c": replace(TINY, lr=0.03)}


def fake_run(config):
    """A record that depends on the config, computed without JAX."""
    return Record({"lr": config.lr, "seeds": list(config.seeds)}, {"x": np.arange(3.0) * config.lr})


class FakeExperiment:
    NAME = "table1"
    run = staticmethod(fake_run)


WHERE = {"versions": {"implicitbias": __version__, "jax": "9.9"}, "host": "node7"}


class ListBackend:
    """A backend that computes ``fake_run`` (whatever ``run`` it is given) in order, records what it
    was given, and yields a scripted failure."""

    name = "fake"

    def __init__(self, fail=(), salvage=()):
        self.given, self.fail, self._salvage = [], set(fail), list(salvage)

    def map(self, run, configs):
        for key, cfg in configs.items():
            self.given.append(key)
            if key in self.fail:
                yield Failed(key, "RuntimeError: boom", 1, False)
                yield Failed(key, "RuntimeError: boom", 2, True)
            else:
                yield Finished(key, fake_run(cfg), 0.5, WHERE)

    def salvage(self):
        return self._salvage

    def close(self):
        pass


def test_local_backend_yields_each_run_in_order():
    events = list(LocalBackend().map(fake_run, GRID))
    assert [type(e) for e in events] == [Started, Finished] * 3
    assert [e.key for e in events] == ["a", "a", "b", "b", "c", "c"]
    assert [e.record.metrics["lr"] for e in events[1::2]] == [0.01, 0.02, 0.03]
    assert all(e.where is None and e.wall_seconds >= 0 for e in events[1::2])  # a clock difference: >= 0 exactly


class FakePool:
    """``drive``'s pool: results scripted per key and attempt (a _Failure or a record)."""

    def __init__(self, script):
        self.script, self.pending, self.submitted, self._n = script, {}, [], 0

    def submit(self, run, key, config):
        self._n += 1
        self.submitted.append(key)
        return (self._n, key, self.submitted.count(key))

    def wait(self, handles, timeout):
        h = handles[0]
        _, key, attempt = h
        out = self.script.get((key, attempt))
        return [(h, out if isinstance(out, _Failure) else (fake_run(GRID[key]), 0.1, None))]


def test_drive_retries_transient_failures_and_gives_up_on_bad_input():
    pool = FakePool({("a", 1): _Failure("WorkerCrashedError: the worker died", True),
                     ("a", 2): _Failure("OSError: disk", True),
                     ("b", 1): _Failure("ValueError: bad", False),
                     ("c", 1): _Failure("WorkerCrashedError: x", True), ("c", 2): _Failure("x", True),
                     ("c", 3): _Failure("x", True)})
    events = list(drive(pool, fake_run, GRID, retries=2))
    got = [(type(e).__name__, e.key, getattr(e, "attempt", None), getattr(e, "final", None)) for e in events]
    assert got == [
        ("Failed", "a", 1, False), ("Failed", "b", 1, True), ("Failed", "c", 1, False),
        ("Failed", "a", 2, False), ("Failed", "c", 2, False),
        ("Finished", "a", None, None), ("Failed", "c", 3, True),
    ]
    assert pool.submitted == ["a", "b", "c", "a", "c", "a", "c"] and pool.pending == {}
    assert events[5].record.metrics["lr"] == 0.01


def test_a_worker_with_another_library_version_is_refused():
    ok = (Record({}), 1.0, WHERE)
    assert _same_version(ok) is ok
    bad = _same_version((Record({}), 1.0, {"versions": {"implicitbias": "0.0.9"}}))
    assert isinstance(bad, _Failure) and not bad.transient and "implicitbias 0.0.9" in bad.error


def test_drive_with_no_retries_gives_up_at_once():
    pool = FakePool({("a", 1): _Failure("WorkerCrashedError: x", True)})
    events = list(drive(pool, fake_run, {"a": TINY, "b": GRID["b"]}, retries=0))
    assert [(type(e).__name__, e.key) for e in events] == [("Failed", "a"), ("Finished", "b")]
    assert events[0].final


def test_runner_skips_stored_runs_before_the_backend_and_stores_where_it_ran(tmp_path):
    store = Store(tmp_path)
    run_all(FakeExperiment, {"a": GRID["a"]}, store)
    backend = ListBackend()
    done = []
    outs = run_all(FakeExperiment, GRID, store, backend=backend, on_done=lambda o: done.append(o.preset))
    assert backend.given == ["b", "c"]  # "a" was complete: never handed to the backend
    assert [o.preset for o in outs] == ["a", "b", "c"] and [o.skipped for o in outs] == [True, False, False]
    assert done == ["a", "b", "c"]
    meta = json.loads((outs[1].path / "meta.json").read_text())
    assert meta["host"] == "node7" and meta["versions"] == WHERE["versions"] and meta["wall_seconds"] == 0.5
    assert np.array_equal(store.load(outs[2].path).arrays()["x"], np.arange(3.0) * 0.03)
    again = ListBackend()
    assert all(o.skipped for o in run_all(FakeExperiment, GRID, store, backend=again)) and again.given == []


def test_runner_reports_a_failed_run_and_keeps_the_others(tmp_path):
    store = Store(tmp_path)
    retried = []
    outs = run_all(FakeExperiment, GRID, store, backend=ListBackend(fail={"b"}), on_retry=retried.append)
    assert [(o.preset, o.error, o.attempts) for o in outs] == [
        ("a", None, 1), ("b", "RuntimeError: boom", 2), ("c", None, 1)]
    assert [(f.key, f.attempt) for f in retried] == [("b", 1)]
    assert not outs[1].path.exists()
    assert store.is_complete("table1", GRID["a"]) and store.is_complete("table1", GRID["c"])


def test_runner_computes_a_config_named_twice_once(tmp_path):
    store, backend = Store(tmp_path), ListBackend()
    outs = run_all(FakeExperiment, {"a": TINY, "a-again": TINY, "b": GRID["b"]}, store, backend=backend)
    assert backend.given == ["a", "b"]
    assert outs[1].path == outs[0].path and outs[1].skipped and not outs[0].skipped


def test_interrupt_keeps_runs_the_backend_finished_meanwhile(tmp_path):
    store = Store(tmp_path)

    class Interrupted(ListBackend):
        def map(self, run, configs):
            yield Finished("a", run(configs["a"]), 1.0)
            raise KeyboardInterrupt

    backend = Interrupted(salvage=[Finished("c", fake_run(GRID["c"]), 2.0)])
    with pytest.raises(KeyboardInterrupt):
        run_all(FakeExperiment, GRID, store, backend=backend)
    assert {r.preset for r in store.runs("table1")} == {"a", "c"}
    assert not store.run_dir("table1", GRID["b"]).exists()


runner = CliRunner()
ARGS = ["run", "table1", "--preset", "beyond_theorem/L6", "--seeds", "0"]


def _one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(set(lines)) == 1 and "Traceback" not in res.output, res.stderr
    return lines[0]


def test_cli_lists_a_run_that_failed_every_attempt_and_exits_1(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "make", lambda *a, **k: ListBackend(fail={"beyond_theorem/L6/special"}))
    res = runner.invoke(cli.app, ARGS + ["--runs-dir", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "beyond_theorem/L6/special attempt 1 failed, retrying: RuntimeError: boom" in " ".join(res.stdout.split())
    assert "1 of 2 runs failed on every attempt (nothing stored for them): beyond_theorem/L6/special: " \
           "RuntimeError: boom" in res.stderr
    assert [r.preset for r in Store(tmp_path).runs("table1")] == ["beyond_theorem/L6"]


def test_unknown_backend_is_one_line(tmp_path):
    line = _one_error_line(runner.invoke(cli.app, ARGS + ["--backend", "slurm", "--runs-dir", str(tmp_path)]))
    assert "unknown backend 'slurm'" in line and "local, ray" in line
    assert not (tmp_path / "table1").exists()


def test_ray_options_on_the_local_backend_are_one_line(tmp_path):
    line = _one_error_line(runner.invoke(cli.app, ARGS + ["--address", "auto", "--gpus-per-run", "1"]))
    assert "--address, --gpus-per-run apply only to --backend ray" in line


def test_ray_not_installed_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    line = _one_error_line(runner.invoke(cli.app, ARGS + ["--backend", "ray", "--runs-dir", str(tmp_path)]))
    assert "needs Ray, which is not installed" in line and "pip install 'implicitbias[ray]'" in line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "nonsense"])
def test_unreachable_address_is_one_line(tmp_path, monkeypatch, address):
    monkeypatch.setattr(backends, "import_ray", lambda: object())  # the check happens before Ray is used
    address = address.format(port=_closed_port())
    line = _one_error_line(runner.invoke(cli.app, ARGS + ["--backend", "ray", "--address", address,
                                                          "--runs-dir", str(tmp_path)]))
    expected = "expected auto, host:port" if address == "nonsense" else f"cannot reach the Ray cluster at {address}"
    assert expected in line, line
    assert not (tmp_path / "table1").exists()


class FakeRay:
    """Enough of the ``ray`` module for the backend to start, measure the cluster and stop."""

    class exceptions:
        RayError = RuntimeError

    def __init__(self, resources):
        self.resources, self.inits, self.stopped = resources, [], False

    def init(self, **kwargs):
        self.inits.append(kwargs)

    def cluster_resources(self):
        return self.resources

    def remote(self, fn):
        return fn

    def shutdown(self):
        self.stopped = True


class FakeWatchdog:
    """Records what the backend asks of its watchdog (no process is started)."""

    calls: list = []

    def __init__(self):
        self.calls.append("watchdog")

    def tell(self, session_dir):
        self.calls.append(("tell", session_dir))

    def stop(self):
        self.calls.append("stop")


def test_a_run_larger_than_the_cluster_is_refused_not_left_waiting(monkeypatch, tmp_path):
    fake = FakeRay({"CPU": 2.0})
    monkeypatch.setattr(backends, "import_ray", lambda: fake)
    monkeypatch.setattr(backends.ray_watchdog, "Watchdog", FakeWatchdog)
    monkeypatch.setattr(backends.ray_watchdog, "reap_stale", lambda: FakeWatchdog.calls.append("reap_stale"))
    monkeypatch.setattr(backends.ray_watchdog, "WATCHABLE", True)
    FakeWatchdog.calls.clear()
    backend = backends.make("ray", cpus_per_run=2)
    assert list(backend.map(fake_run, {})) == [] and fake.inits == []  # nothing to run: Ray not started
    backend._start()
    backend._check_fits(GRID)  # 2 CPUs per run fit
    backend.close()
    assert fake.inits[0]["address"] == "local" and fake.stopped
    # a local start first stops what a killed driver left, then starts the watchdog before ray.init
    assert FakeWatchdog.calls == ["reap_stale", "watchdog", ("tell", None), "stop"]
    with pytest.raises(BackendError, match=r"asks for 1 GPU \(--gpus-per-run\) but the local Ray instance has 0 GPU"):
        list(backends.make("ray", gpus_per_run=1).map(fake_run, GRID))
    line = _one_error_line(runner.invoke(cli.app, ARGS + ["--backend", "ray", "--cpus-per-run", "3",
                                                          "--runs-dir", str(tmp_path)]))
    assert "asks for 3 CPU (--cpus-per-run) but the local Ray instance has 2 CPU in all" in line


def test_a_watchdog_that_cannot_start_is_one_line_and_ray_is_not_started(monkeypatch):
    fake = FakeRay({"CPU": 2.0})

    def no_process():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(backends, "import_ray", lambda: fake)
    monkeypatch.setattr(backends.ray_watchdog, "Watchdog", no_process)
    monkeypatch.setattr(backends.ray_watchdog, "reap_stale", lambda: None)
    monkeypatch.setattr(backends.ray_watchdog, "WATCHABLE", True)
    with pytest.raises(BackendError, match="cannot start the local Ray instance's watchdog: .*temporarily"):
        backends.make("ray")._start()
    assert fake.inits == []


def test_the_realworld_sweep_script_names_the_runs_the_old_pool_stored():
    """scripts/sweep_realworld.py builds its configs in-process now; their names (preset + sweep label)
    are those of the 47 runs its subprocess pool of ``implicitbias run`` commands stored
    (results/realworld-sweep.json), so the report and the resumed sweep find them."""
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("sweep_realworld", root / "scripts" / "sweep_realworld.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    configs = sweep.configs_of(list(range(len(sweep.jobs()))))
    stored = json.loads((root / "results" / "realworld-sweep.json").read_text())["runs"]
    assert sorted(configs) == sorted(r["preset"] for r in stored)
    assert len({Store("x").run_dir("realworld", c) for c in configs.values()}) == len(configs) == 47
    assert configs["s4d/digits/last[mode=replace,seeds=[5, 6, 7, 8, 9]]"].seeds == (5, 6, 7, 8, 9)


# The watchdog of a local Ray instance (implicitbias.runtime.ray_watchdog) on ordinary processes: a fake
# session directory, fake agents (``sleep`` titled ``ray::...`` writing a log there) and state files.
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the watchdog reads /proc (Linux only); elsewhere there is none")


def _sleeper(title: str | None = None, log: Path | None = None, ignore_term: bool = False) -> subprocess.Popen:
    """``sleep 60``, titled ``title`` (as Ray's agents retitle themselves), with stdout on ``log``."""
    script = ("trap '' TERM; " if ignore_term else "") + (f"exec -a {title} " if title else "exec ") + "sleep 60"
    out = open(log, "w") if log else subprocess.DEVNULL
    p = subprocess.Popen(["bash", "-c", script], stdout=out, stdin=subprocess.DEVNULL)
    if log:
        out.close()
    want = (title or "sleep").encode()
    for _ in range(200):  # until bash has exec'd
        if Path(f"/proc/{p.pid}/cmdline").read_bytes().startswith(want):
            return p
        time.sleep(0.01)
    raise AssertionError(f"{script!r} did not start")


@linux_only
def test_reap_stops_exactly_the_processes_of_one_instance(tmp_path):
    session = tmp_path / "session_1"
    (session / "logs").mkdir(parents=True)
    agent = _sleeper("ray::FakeAgent", session / "logs" / "agent.log", ignore_term=True)  # needs SIGKILL
    named = subprocess.Popen(["sh", "-c", "sleep 60; :", str(session)],  # names it (as the raylet); a child
                             start_new_session=True)
    known = _sleeper()
    joined = _sleeper(None, session / "logs" / "driver.log")  # a driver that joined: writes there, not ray::
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path / "session_10")])
    others = [joined, other]  # ``other`` names another instance's directory
    try:
        start = {p.pid: watchdog._stat(p.pid)[2] for p in [known, joined]}
        # ``joined`` as if its pid were recycled: recorded with another start time, it is another process
        pids = watchdog.instance_processes(str(session), {known.pid: start[known.pid],
                                                          joined.pid: start[joined.pid] + 1})
        assert {agent.pid, named.pid, known.pid} < pids and len(pids) == 4  # and the ``sleep`` under ``named``
        assert set(watchdog.reap(str(session), {known.pid: start[known.pid]}, grace=0.3)) == pids
        assert all(p.wait(1) is not None for p in [agent, named, known])
        assert all(p.poll() is None for p in others)
        assert watchdog.instance_processes(str(session)) == set()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(named.pid, signal.SIGKILL)  # and its child
        for p in [agent, named, known, *others]:
            p.kill()
            p.wait()


@linux_only
def test_reap_stale_stops_an_instance_whose_driver_is_gone_and_nothing_else(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    dead, live = tmp_path / "session_dead", tmp_path / "session_live"
    dead.mkdir(), live.mkdir()
    driver = _sleeper()
    driver_start = watchdog._stat(driver.pid)[2]
    driver.kill(), driver.wait()
    agents = [_sleeper("ray::FakeAgent", d / "agent.log") for d in (dead, live)]
    try:
        for name, pid, start, session in [("dead", driver.pid, driver_start, dead),
                                          ("live", os.getpid(), watchdog._stat(os.getpid())[2], live)]:
            (state / f"{name}.json").write_text(json.dumps({"driver_pid": pid, "driver_start": start,
                                                            "session_dir": str(session)}))
        (state / "damaged.json").write_text("{")
        assert watchdog.reap_stale(state) == [agents[0].pid]
        assert agents[0].wait(1) is not None and agents[1].poll() is None
        assert sorted(f.name for f in state.iterdir()) == ["live.json"]
    finally:
        for p in agents:
            p.kill()
            p.wait()


@linux_only
def test_the_watchdog_stops_the_instance_when_its_driver_is_killed(tmp_path):
    session = tmp_path / "session_2"
    session.mkdir()
    driver = _sleeper()
    agent = _sleeper("ray::FakeAgent", session / "agent.log")
    dog = watchdog.Watchdog(driver.pid, tmp_path / "state")
    try:
        dog.tell(str(session))
        state = tmp_path / "state" / f"{driver.pid}-session_2.json"
        for _ in range(200):  # the watchdog has read it
            if state.exists():
                break
            time.sleep(0.01)
        assert json.loads(state.read_text())["session_dir"] == str(session)
        driver.kill()
        t0 = time.monotonic()
        agent.wait(watchdog.POLL_S + watchdog.GRACE_S + 2)  # noticed within a poll, stopped by SIGTERM
        dog.proc.wait(2)
        assert time.monotonic() - t0 < watchdog.POLL_S + watchdog.GRACE_S + 2
        assert not state.exists()
    finally:
        dog.stop(2)
        for p in [driver, agent]:
            p.kill()
            p.wait()
