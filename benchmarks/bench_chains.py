"""Wall time of one chain-identification preset (3 seeds), compile included.

Runs ``implicitbias run chains --preset NAME`` (default ``train1-3/test1-3``, the authors' chain-4
run at their budget) in a fresh process and a fresh store with the persistent compile cache switched
off, then prints the report and the wall time; the machine's load average is printed before and
after, because a shared CPU slows it. Per-preset times on a 2-core CPU: docs/findings/chains.md.

    python benchmarks/bench_chains.py [--preset NAME] [--runs-dir DIR] [--smoke]
    (--runs-dir keeps the runs; --smoke: one seed, 2 epochs of 2 steps of 60 episodes, no report; a test runs it)
"""

import sys

from _cli_timing import timed_run

SMOKE_ARGS = ["--preset", "train1-3/test1-3", "--seeds", "0", "--set", "batch=60", "--set", "sub_batches=2",
              "--set", "steps_per_epoch=2", "--set", "epochs=2", "--set", "n_val=20", "--set", "n_eval=20"]

if __name__ == "__main__":
    keep = sys.argv[sys.argv.index("--runs-dir") + 1] if "--runs-dir" in sys.argv else None
    preset = sys.argv[sys.argv.index("--preset") + 1] if "--preset" in sys.argv else "train1-3/test1-3"
    smoke = "--smoke" in sys.argv
    wall = timed_run("chains", SMOKE_ARGS if smoke else ["--preset", preset], keep, report=not smoke)
    what = "smoke run (one seed)" if smoke else f"chains preset {preset} (3 seeds)"
    print(f"{what} wall time, compile included, no compile cache: {wall:.1f} s")
