"""Wall time of the whole Table 1 (12 cells x 4 seeds), compile included, in a fresh store.

Runs in a fresh process with the persistent compilation cache switched off, so the figure is what
a first ``make run`` costs after install. For scale: the authors' implementation needs about 6 ms
per step on a 2-core CPU and about 47 minutes for the same table.

    python benchmarks/bench_table1.py [--smoke] [--json PATH]
        --smoke: one cell, one seed, 50 updates, no report (a test runs it)
        --json PATH: also write the figure, the machine and its load as JSON (results/bench-table1.json:
                     the README's timing of Table 1 is read from it)
"""

import json
import os
import platform
import sys
from datetime import UTC, datetime

from _cli_timing import timed_run
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)

SMOKE_ARGS = ["--preset", "beyond_theorem/L6", "--seeds", "200", "--set", "max_steps=50", "--set", "extra_steps=0"]

if __name__ == "__main__":
    smoke = "--smoke" in sys.argv
    out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    before = os.getloadavg()
    wall = timed_run("table1", SMOKE_ARGS if smoke else [], report=not smoke)
    what = "smoke run (one cell, one seed)" if smoke else "Table 1 (every preset x 4 seeds)"
    print(f"{what} wall time, compile included, no compile cache: {wall:.1f} s")
    if out:
        from implicitbias.runtime.store import atomic_write, library_versions

        record = {"benchmark": "benchmarks/bench_table1.py" + (" --smoke" if smoke else ""), "what": what,
                  "wall_seconds": wall, "cpus": os.cpu_count(), "load_average_before": list(before),
                  "load_average_after": list(os.getloadavg()), "platform": platform.platform(),
                  "processor": platform.processor(), "versions": library_versions(),
                  "date": datetime.now(UTC).isoformat(timespec="seconds")}
        atomic_write(out, json.dumps(record, indent=1) + "\n")
