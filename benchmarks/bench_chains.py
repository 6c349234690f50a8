"""Wall time of one chain-identification preset (3 seeds), compile included.

Runs ``implicitbias run chains --preset NAME`` (default ``train1-3/test1-3``, the authors' chain-4
run at their budget) in a fresh process and a fresh store with the persistent compile cache switched
off, then prints the report and the wall time; the machine's load average is printed before and
after, because a shared CPU slows it. Per-preset times on a 2-core CPU: docs/findings/chains.md.

    python benchmarks/bench_chains.py [--preset NAME] [--runs-dir DIR] [--smoke]
    (--runs-dir keeps the runs; --smoke: one seed, 2 epochs of 2 steps of 60 episodes, no report; a test runs it)
    python benchmarks/bench_chains.py --per-step [PRESET ...]   # every preset by default

``--per-step``: in this process, the seconds of one Adam step of each preset (its seeds vmapped, its
batch and sub-batches), from two compiled runs of one epoch of 1 and of 3 steps (each run twice, the
second timed: compile excluded); then the preset's worst case, ``epochs x steps_per_epoch`` steps
(early stop can end sooner), extrapolated, not measured.
"""

import sys
import time

from _cli_timing import load_average, timed_run
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)


def per_step(presets: list[str]) -> None:
    from dataclasses import replace

    import jax

    from implicitbias.experiments.chains import PRESETS
    from implicitbias.tasks import chains as ch

    print(f"load average before: {load_average()}")
    print("| preset | seeds | batch (sub-batches) | s per step | worst case steps | worst case (extrapolated) |")
    print("|---|---|---|---|---|---|")
    for name in presets or list(PRESETS):
        c = PRESETS[name]
        t = {}
        for k in (1, 3):
            spec = replace(c, epochs=1, steps_per_epoch=k, early_stop=False).spec()
            for _ in range(2):
                t0 = time.perf_counter()
                jax.block_until_ready(ch.train_and_evaluate(spec, c.seeds))
                t[k] = time.perf_counter() - t0
        step = max(t[3] - t[1], 0.0) / 2
        steps = c.epochs * c.steps_per_epoch
        print(f"| {name} | {len(c.seeds)} | {c.batch} ({c.sub_batches}) | {step:.3f} | {steps} | "
              f"{step * steps / 60:.0f} min |", flush=True)
    print(f"load average after: {load_average()}")

SMOKE_ARGS = ["--preset", "train1-3/test1-3", "--seeds", "0", "--set", "batch=60", "--set", "sub_batches=2",
              "--set", "steps_per_epoch=2", "--set", "epochs=2", "--set", "n_val=20", "--set", "n_eval=20"]

if __name__ == "__main__":
    if "--per-step" in sys.argv:
        per_step([a for a in sys.argv[1:] if not a.startswith("--")])
        sys.exit(0)
    keep = sys.argv[sys.argv.index("--runs-dir") + 1] if "--runs-dir" in sys.argv else None
    preset = sys.argv[sys.argv.index("--preset") + 1] if "--preset" in sys.argv else "train1-3/test1-3"
    smoke = "--smoke" in sys.argv
    wall = timed_run("chains", SMOKE_ARGS if smoke else ["--preset", preset], keep, report=not smoke)
    what = "smoke run (one seed)" if smoke else f"chains preset {preset} (3 seeds)"
    print(f"{what} wall time, compile included, no compile cache: {wall:.1f} s")
