"""Wall time of the full chain-identification table (6 rows x 3 seeds), compile included.

Runs ``implicitbias run chains`` in a fresh process and a fresh store with the persistent compile
cache switched off, then prints the report and the wall time. The target is under 30 minutes on a
2-core CPU; the machine's load average is printed before and after, because a shared CPU slows it.

    python benchmarks/bench_chains.py [--runs-dir DIR] [--smoke]
    (--runs-dir keeps the runs; --smoke: one row, one seed, 20 steps, no report; a test runs it)
"""

import sys

from _cli_timing import timed_run

SMOKE_ARGS = ["--preset", "train1-3/test1-3", "--seeds", "0", "--set", "steps=20", "--set", "n_eval=20"]

if __name__ == "__main__":
    keep = sys.argv[sys.argv.index("--runs-dir") + 1] if "--runs-dir" in sys.argv else None
    smoke = "--smoke" in sys.argv
    wall = timed_run("chains", SMOKE_ARGS if smoke else [], keep, report=not smoke)
    what = "smoke run (one row, one seed)" if smoke else "chains table (6 rows x 3 seeds)"
    print(f"{what} wall time, compile included, no compile cache: {wall:.1f} s")
