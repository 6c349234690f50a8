"""Guess & Check throughput: the compiled JAX sampler against a plain NumPy loop over the same sampler.

For width 160 / depth 2 (the width sweep's widest point: unnormalised, eps_train 0.02) and width 5 /
depth 10 (the depth sweep's deepest: normalised, eps_train 0.0035), on seed 0's problem: the JAX
sampler (:func:`implicitbias.tasks.matrix_sensing.guess_and_check`, compile excluded by a warm-up)
and a NumPy loop over chunks of the same size (NumPy's own Gaussian generator, then
:func:`~implicitbias.tasks.matrix_sensing.numpy_guess_and_check`), timed one after the other in the
same process. Prints samples per second of wall time and per second of CPU time (all threads of
the process: on a shared, overloaded CPU the wall-time rate measures the load more than the code)
for both, their ratios, the device and the load average.

    python benchmarks/bench_gc.py [--smoke]      (--smoke: tiny sample counts; a test runs it)
"""

import os
import sys
import time

import jax
import numpy as np

from implicitbias.tasks import matrix_sensing as ms
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)

CASES = {  # name -> (spec, samples timed)
    "width 160 / depth 2": (ms.GCSpec(5, 5, 160, 2, eps_train=0.02), 8 * ms.BLOCK),
    "width 5 / depth 10": (ms.GCSpec(5, 5, 5, 10, normalize=True, eps_train=0.0035), 64 * ms.BLOCK),
}


def _rates(fn, n: int) -> tuple[float, float]:
    """``(samples per wall second, samples per CPU second)`` of ``fn()`` drawing ``n`` samples."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def jax_rates(spec, p, n: int) -> tuple[float, float]:
    key = [jax.random.PRNGKey(0)]
    chunk = ms.auto_chunk(spec)
    ms.guess_and_check(key, [p], spec, ms.BLOCK, chunk)  # compile
    return _rates(lambda: ms.guess_and_check(key, [p], spec, n, chunk), n)


def numpy_rates(spec, p, n: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    chunk = ms.auto_chunk(spec)

    def loop():
        for start in range(0, n, chunk):
            draws = rng.standard_normal((min(chunk, n - start), spec.n_params))
            ms.numpy_guess_and_check(draws, p, spec)

    return _rates(loop, n)


if __name__ == "__main__":
    smoke = "--smoke" in sys.argv
    p = ms.make_problem(0)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); load average before: "
          f"{os.getloadavg()[0]:.2f}")
    print("| case | samples | JAX samples/s | NumPy samples/s | JAX / NumPy | JAX samples/CPU-s | NumPy samples/CPU-s "
          "| JAX / NumPy (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (spec, n) in CASES.items():
        n = ms.BLOCK if smoke else n
        (j, jc), (q, qc) = jax_rates(spec, p, n), numpy_rates(spec, p, n)
        print(f"| {name} | {n:,} | {j:,.0f} | {q:,.0f} | {j / q:.2f} | {jc:,.0f} | {qc:,.0f} | {jc / qc:.2f} |",
              flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
