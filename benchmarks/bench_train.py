"""Training speed: seed-steps per second of the compiled loop, 4 and 64 seeds batched.

Prints, for beyond_theorem/L6 (linear SSM, adaptive-lr GD) and ssm_in_nn/L6 (SSM + MLP, Adam), the
steady-state rate measured on a fixed number of updates (eps tiny so no run stops early), after a
warm-up call that compiles. Targets (2-core CPU): >= 1e6 seed-steps/s for the linear SSM
and >= 1e5 for the SSM+MLP, with 64 seeds batched. "with copy": the same loop keeping the
parameters of a measurement point before the end aside (``StopRule.measure_at``: one
masked copy of the parameters per update), and its rate relative to the plain loop. "listened":
the plain loop while a progress listener is registered (the CLI's case: the loop
runs in segments of about 0.5 s and reports between them), and its rate relative to the plain loop.

    python benchmarks/bench_train.py [--smoke]     (--smoke: the linear SSM's plain loop, 200 updates, 2 seeds; a test)
"""

import contextlib
import sys
import time
from dataclasses import replace

import jax

from implicitbias.core import progress
from implicitbias.experiments import table1
from implicitbias.core.optim import StopRule, make_optimizer
from implicitbias.tasks import teacher_student as ts
from implicitbias.core.train import train_batched
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)

SMOKE = "--smoke" in sys.argv
STEPS = 200 if SMOKE else 20_000


def rate(preset: str, n_seeds: int, keep_measured: bool = False, listen: bool = False) -> float:
    cfg = replace(
        table1.PRESETS[preset],
        seeds=tuple(range(n_seeds)),
        eps=1e-300,
        max_steps=STEPS,
        log_every=100 if SMOKE else 1000,
    )
    models, datas = ts.gd_batch(cfg)
    # measure_at=0 < extra_steps=1: the loop carries the masked copy (never taken: eps is never reached)
    rule = StopRule(cfg.eps, 1, cfg.max_steps, measure_at=0) if keep_measured else StopRule(cfg.eps, 0, cfg.max_steps)
    opt = make_optimizer(cfg.optimizer, cfg.lr)
    log = ts.trajectory_log(cfg.horizon, cfg.error_from)
    with progress.listening(lambda report: None) if listen else contextlib.nullcontext():
        jax.block_until_ready(train_batched(ts.train_loss, models, datas, opt, rule, cfg.log_every, log))  # compile
        start = time.perf_counter()
        res = jax.block_until_ready(train_batched(ts.train_loss, models, datas, opt, rule, cfg.log_every, log))
        elapsed = time.perf_counter() - start
    return float(res.steps.sum()) / elapsed


if __name__ == "__main__":
    print(f"devices: {jax.devices()}")
    head = ("preset", "seeds", "seed-steps/s", "steps/s per seed", "with copy", "ratio", "listened", "ratio")
    print("{:22s} {:>5s} {:>14s} {:>17s} {:>12s} {:>6s} {:>12s} {:>6s}".format(*head))
    for preset in ["beyond_theorem/L6"] if SMOKE else ["beyond_theorem/L6", "ssm_in_nn/L6"]:
        for n in [2] if SMOKE else [4, 64]:
            r = rate(preset, n)
            if SMOKE:  # the plain loop only (one compile): the smoke checks the script runs, not the ratios
                print(f"{preset:22s} {n:5d} {r:14,.0f} {r / n:17,.0f} {'-':>12s} {'-':>6s} {'-':>12s} {'-':>6s}",
                      flush=True)
                continue
            c = rate(preset, n, keep_measured=True)
            w = rate(preset, n, listen=True)
            print(f"{preset:22s} {n:5d} {r:14,.0f} {r / n:17,.0f} {c:12,.0f} {c / r:6.2f} {w:12,.0f} {w / r:6.2f}",
                  flush=True)
