"""Wall time of the whole Table 1 (12 cells x 4 seeds), compile included, in a fresh store.

Runs in a fresh process with the persistent compilation cache switched off, so the figure is what
a first ``make run`` costs after install. For scale: the authors' implementation needs about 6 ms
per step on a 2-core CPU and about 47 minutes for the same table.

    python benchmarks/bench_table1.py [--smoke]    (--smoke: one cell, one seed, 50 updates, no report; a test runs it)
"""

import sys

from _cli_timing import timed_run

SMOKE_ARGS = ["--preset", "beyond_theorem/L6", "--seeds", "200", "--set", "max_steps=50", "--set", "extra_steps=0"]

if __name__ == "__main__":
    smoke = "--smoke" in sys.argv
    wall = timed_run("table1", SMOKE_ARGS if smoke else [], report=not smoke)
    what = "smoke run (one cell, one seed)" if smoke else "Table 1 (12 cells x 4 seeds)"
    print(f"{what} wall time, compile included, no compile cache: {wall:.1f} s")
