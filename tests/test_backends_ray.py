"""``--backend ray`` on a real local Ray instance: the same records as the local backend,
bit for bit and under the same config hashes; a worker killed mid-run is retried and nothing is lost;
a re-run recomputes nothing; ``--address`` joins a running instance; Ctrl-C keeps the finished runs
and frees the cluster; a driver killed with SIGKILL leaves no process of its local instance running
(its watchdog stops them, or the next start if the watchdog was killed too).

Marked ``ray`` (not in ``make test``: each test starts Ray, seconds of CPU on 2 cores, and runs the
CLI in fresh processes); ``make test-ray`` installs the extra and runs them. The fast tests of the
same logic without Ray are in ``tests/test_backends.py``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from implicitbias import cli
from implicitbias.runtime import ray_watchdog as watchdog

ray = pytest.importorskip("ray", reason="Ray is not installed (make test-ray installs the ray extra)")
pytestmark = pytest.mark.ray

GRID = ["run", "table1", "--preset", "beyond_theorem/L6", "--sweep", "lr=0.005,0.01", "--seeds", "0,1"]


def _cli(args: list[str], runs: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "implicitbias", *args, "--runs-dir", str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, COLUMNS="200", **env))


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process under ``root`` (its Ray instance and workers)."""
    parent, cmd = {}, {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd[int(p.name)] = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    out, frontier = {}, {root}
    while frontier:
        frontier = {pid for pid, pp in parent.items() if pp in frontier and pid not in out}
        out.update({pid: cmd[pid] for pid in frontier})
    return out


def _runs(store: Path) -> dict[str, Path]:
    return {d.name: d for d in (store / "table1").iterdir() if not d.name.startswith(".")}


def _same_record(a: Path, b: Path) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    ma.pop("compute_seconds"), mb.pop("compute_seconds")  # wall time, not a result
    assert ma == mb
    with np.load(a / "arrays.npz") as x, np.load(b / "arrays.npz") as y:
        assert x.files == y.files
        for k in x.files:  # bit for bit, NaN padding included
            assert x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes(), k


def test_ray_matches_local_survives_a_killed_worker_and_reruns_nothing(tmp_path):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    res = CliRunner().invoke(cli.app, GRID + ["--runs-dir", str(local)])
    assert res.exit_code == 0, res.output

    proc = _cli(GRID + ["--backend", "ray"], on_ray)  # no --address: a local Ray instance of this machine's CPUs
    killed, deadline = None, time.monotonic() + 240
    try:
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            for pid, cmd in _descendants(proc.pid).items():
                if cmd.startswith("ray::_run_task"):  # a worker while it executes a run (idle: ray::IDLE)
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no worker was seen running a task"
    assert proc.returncode == 0, out[-3000:]
    assert "attempt 1 failed, retrying: WorkerCrashedError" in out, out[-3000:]
    assert "4/4" in out

    runs = _runs(on_ray)
    assert sorted(runs) == sorted(_runs(local))  # same config hashes, nothing lost
    for name, path in runs.items():
        _same_record(_runs(local)[name], path)
        meta = json.loads((path / "meta.json").read_text())
        assert meta["host"] and meta["versions"]["backend"].startswith("cpu")
    assert not [d for d in (on_ray / "table1").iterdir() if d.name.startswith(".")]  # no leftovers

    stamps = {n: (p / "meta.json").stat().st_mtime_ns for n, p in runs.items()}
    again = subprocess.run([sys.executable, "-m", "implicitbias", *GRID, "--backend", "ray", "--runs-dir",
                            str(on_ray)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("stored, skipped") == 4
    assert {n: (p / "meta.json").stat().st_mtime_ns for n, p in _runs(on_ray).items()} == stamps


def test_address_joins_a_running_instance_and_ctrl_c_keeps_finished_runs(tmp_path):
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        # per cell (L6 and L6/special) a short run and one that would take minutes (eps never reached)
        args = ["run", "table1", "--preset", "beyond_theorem/L6", "--seeds", "0", "--set", "eps=1e-30",
                "--sweep", "max_steps=300,1000000", "--backend", "ray", "--address", address]
        proc = _cli(args, tmp_path)
        deadline = time.monotonic() + 240
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if (tmp_path / "table1").is_dir() and len(_runs(tmp_path)) == 2:
                    break
                time.sleep(0.2)
            time.sleep(1.0)
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, out[-3000:]
        assert "interrupted: completed runs are stored" in out
        presets = {json.loads((p / "config.json").read_text())["preset"] for p in _runs(tmp_path).values()}
        assert presets == {"beyond_theorem/L6[max_steps=300]", "beyond_theorem/L6/special[max_steps=300]"}
        assert not [d for d in (tmp_path / "table1").iterdir() if d.name.startswith(".")]
        # the long run's task was cancelled: the instance gets its CPUs back
        for _ in range(100):
            if ray.available_resources().get("CPU") == 2.0:
                break
            time.sleep(0.2)
        assert ray.available_resources().get("CPU") == 2.0
    finally:
        ray.shutdown()


# Two runs that each take minutes (eps never reached): the driver is killed mid-grid.
LONG_GRID = ["run", "table1", "--preset", "beyond_theorem/L6", "--seeds", "0", "--set", "eps=1e-30",
             "--set", "max_steps=1000000", "--backend", "ray"]


def _start_and_wait_for_a_run(tmp_path: Path) -> tuple[subprocess.Popen, Path, dict, dict[int, int]]:
    """The CLI on ``LONG_GRID`` with its own state directory, once a worker executes a run: (the
    process, the state directory, the watchdog's state record, pid -> start time of every process
    under the driver but the watchdog: the local instance)."""
    state = tmp_path / "state"
    proc = _cli(LONG_GRID, tmp_path / "runs", **{watchdog.STATE_ENV: str(state)})
    deadline = time.monotonic() + 240
    tree: dict[int, str] = {}
    while proc.poll() is None and time.monotonic() < deadline:
        tree = _descendants(proc.pid)
        if any(cmd.startswith("ray::_run_task") for cmd in tree.values()) and list(state.glob("*.json")):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError(f"no run started: {proc.communicate()[0][-3000:]}")
    record = json.loads(next(state.glob("*.json")).read_text())
    assert "ray_watchdog.py watch" in tree.pop(record["watchdog_pid"])  # the watchdog is a child of the driver
    titles = " ".join(tree.values())
    for name in ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::_run_task"):
        assert name in titles, titles  # what a killed driver left running before the watchdog
    instance = {pid: st[2] for pid in tree if (st := watchdog._stat(pid))}
    # what the watchdog and reap_stale find by the session directory alone includes this whole tree
    found = watchdog.instance_processes(record["session_dir"], exclude={proc.pid})
    assert {p for p, s in instance.items() if watchdog._alive(p, s)} <= found
    return proc, state, record, instance


def _left(instance: dict[int, int], session_dir: str) -> set[int]:
    return {p for p, s in instance.items() if watchdog._alive(p, s)} | watchdog.instance_processes(session_dir)


def test_a_killed_driver_leaves_no_process_of_its_local_instance(tmp_path):
    proc, state, record, instance = _start_and_wait_for_a_run(tmp_path)
    session, dog = record["session_dir"], (record["watchdog_pid"], watchdog._stat(record["watchdog_pid"])[2])
    try:
        proc.kill()  # SIGKILL: no handler of the driver runs
        killed = time.monotonic()
        proc.wait()
        bound = watchdog.POLL_S + 3 * 2 * watchdog.GRACE_S + 2  # a poll, three rounds of TERM/KILL, slack
        while (_left(instance, session) or watchdog._alive(*dog)) and time.monotonic() - killed < 30:
            time.sleep(0.1)
        gone = time.monotonic() - killed
        assert not _left(instance, session) and not watchdog._alive(*dog)
        print(f"\n{len(instance)} processes of the instance, all gone {gone:.2f} s after the SIGKILL")
        assert gone < bound, f"{gone:.1f} s"
        assert not list(state.glob("*.json"))  # the watchdog removed its record
    finally:
        proc.kill()
        watchdog.reap(session, instance)


def test_the_next_start_stops_an_instance_whose_driver_and_watchdog_were_killed(tmp_path):
    proc, state, record, instance = _start_and_wait_for_a_run(tmp_path)
    session = record["session_dir"]
    try:
        os.kill(record["watchdog_pid"], signal.SIGKILL)
        proc.kill()
        proc.wait()
        time.sleep(3 * watchdog.GRACE_S)  # longer than the watchdog would have taken
        left = _left(instance, session)
        assert left, "nothing was left running: the test would prove nothing"
        titles = sorted(Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].decode() for p in left)
        start = time.monotonic()
        stopped = watchdog.reap_stale(state)  # what the next local start does first
        print(f"\n{len(left)} processes left 3 s after the kill ({' '.join(titles)}); "
              f"reap_stale stopped {len(stopped)} in {time.monotonic() - start:.2f} s")
        assert left <= set(stopped)
        assert not _left(instance, session)
        assert not list(state.glob("*.json"))
    finally:
        proc.kill()
        watchdog.reap(session, instance)


def test_ctrl_c_stops_the_local_instance_and_its_watchdog(tmp_path):
    proc, state, record, instance = _start_and_wait_for_a_run(tmp_path)
    session, dog = record["session_dir"], (record["watchdog_pid"], watchdog._stat(record["watchdog_pid"])[2])
    try:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)  # close(): ray.shutdown, then the watchdog stops what is left
        assert proc.returncode == 130, out[-3000:]
        assert not _left(instance, session) and not watchdog._alive(*dog)
        assert not list(state.glob("*.json"))
    finally:
        proc.kill()
        watchdog.reap(session, instance)
