"""Overhead of ``--backend ray`` against the local backend: the same 64-run grid of a tiny
config (table1 ``beyond_theorem/L6``, one seed per run, 300 updates) through the runner and a fresh
store, once in this process and once on a local Ray instance started here, in the same process run.

The persistent compile cache is off for both, so each Ray worker compiles the training loop itself
as a fresh cluster node would (the local backend compiles once, in this process). Printed: wall
times, Ray's start-up apart, and the ratio ray / local; the records of both are checked equal.

    python benchmarks/bench_backend.py            # 64 runs
    python benchmarks/bench_backend.py --smoke    # 4 runs, and one fresh compile cache shared by both
                                                  # (the workers load what this process compiled)
"""

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)

SMOKE = "--smoke" in sys.argv[1:]
_cache = tempfile.TemporaryDirectory() if SMOKE else None
os.environ["IMPLICITBIAS_JAX_CACHE"] = _cache.name if SMOKE else ""  # before Ray starts: its workers inherit it

import numpy as np  # noqa: E402

from implicitbias.runtime import backends  # noqa: E402
from implicitbias.experiments import table1  # noqa: E402
from implicitbias.runtime.runner import run_all  # noqa: E402
from implicitbias.runtime.store import Store  # noqa: E402

try:
    from _cli_timing import load_average
except ImportError:  # run from elsewhere than benchmarks/
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _cli_timing import load_average


def grid(n: int) -> dict[str, table1.Config]:
    base = replace(table1.PRESETS["beyond_theorem/L6"], max_steps=300, log_every=50)
    return {f"beyond_theorem/L6[seeds=[{s}]]": replace(base, seeds=(s,)) for s in range(n)}


def timed(backend, configs, root) -> float:
    start = time.perf_counter()
    outs = run_all(table1, configs, Store(root), backend=backend)
    wall = time.perf_counter() - start
    failed = [o.preset for o in outs if o.error]
    assert not failed and len(outs) == len(configs), failed
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="4 runs instead of 64")
    args = ap.parse_args()
    n = 4 if args.smoke else 64
    try:
        ray_backend = backends.RayBackend()  # validates only; Ray starts below
    except backends.BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    configs = grid(n)
    print(f"{n} runs of table1 beyond_theorem/L6 (1 seed, 300 updates), compile cache "
          f"{'shared' if SMOKE else 'off'}; cpus: {os.cpu_count()}, "
          f"load average before: {load_average()}", flush=True)
    backends.enable_compile_cache()
    with tempfile.TemporaryDirectory() as tmp:
        local = timed(backends.LocalBackend(), configs, f"{tmp}/local")
        print(f"local: {local:.1f} s", flush=True)
        start = time.perf_counter()
        ray_backend._start()
        ray_start = time.perf_counter() - start
        try:
            ray_runs = timed(ray_backend, configs, f"{tmp}/ray")
        finally:
            ray_backend.close()
        ray_total = ray_start + ray_runs
        a, b = (sorted(Store(f"{tmp}/{k}").runs("table1"), key=lambda r: r.path.name) for k in ("local", "ray"))
        same = [x.path.name for x in a] == [y.path.name for y in b] and all(
            {k: v for k, v in x.metrics.items() if k != "compute_seconds"}
            == {k: v for k, v in y.metrics.items() if k != "compute_seconds"}
            and all(np.array_equal(x.arrays()[k], y.arrays()[k], equal_nan=True) for k in x.arrays())
            for x, y in zip(a, b))
    print(f"ray: {ray_total:.1f} s = start {ray_start:.1f} s + runs {ray_runs:.1f} s "
          f"({ray_backend.cpus:g} CPU per run)")
    print(f"records equal: {same}")
    print(f"ray/local wall-time ratio: {ray_total / local:.2f} (without Ray's start: {ray_runs / local:.2f})")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
