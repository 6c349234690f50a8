"""Shared by the whole-table benchmarks: time ``implicitbias run <experiment>`` in a fresh process
and a fresh store with the persistent compile cache off (what a first ``make run`` costs), then
print the report."""

import os
import subprocess
import sys
import tempfile
import time
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def timed_run(experiment: str, args: list[str], runs_dir: str | None = None, report: bool = True) -> float:
    """Seconds of ``implicitbias run <experiment> <args>`` (compile included); the report follows
    unless ``report=False``."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = runs_dir or tmp
        env = dict(os.environ, IMPLICITBIAS_JAX_CACHE="")
        cli = [sys.executable, "-m", "implicitbias.cli"]
        print(f"cpus: {os.cpu_count()}, load average before: {load_average()}", flush=True)
        start = time.perf_counter()
        subprocess.run([*cli, "run", experiment, "--runs-dir", runs, "--force", *args], check=True, env=env)
        wall = time.perf_counter() - start
        if report:
            subprocess.run([*cli, "report", "--runs-dir", runs], check=True, env=env)
    print(f"\nload average after: {load_average()}")
    return wall
