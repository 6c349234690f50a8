"""Guess & Check throughput: the compiled JAX sampler against a plain NumPy loop over the same sampler.

For width 160 / depth 2 (the width sweep's widest point: unnormalised, eps_train 0.02) and width 5 /
depth 10 (the depth sweep's deepest: normalised, eps_train 0.0035), on seed 0's problem: the JAX
sampler (:func:`implicitbias.tasks.matrix_sensing.guess_and_check`, compile excluded by a warm-up)
and a NumPy loop over chunks of the same size (NumPy's own Gaussian generator, then
:func:`~implicitbias.tasks.matrix_sensing.numpy_guess_and_check`), timed one after the other in the
same process. Prints samples/s of both and their ratio, the device and the load average (a shared
CPU slows both).

    python benchmarks/bench_gc.py [--smoke]      (--smoke: tiny sample counts; a test runs it)
"""

import os
import sys
import time

import jax
import numpy as np

import implicitbias  # noqa: F401  (float64)
from implicitbias.tasks import matrix_sensing as ms

CASES = {  # name -> (spec, samples timed)
    "width 160 / depth 2": (ms.GCSpec(5, 5, 160, 2, eps_train=0.02), 16 * ms.BLOCK),
    "width 5 / depth 10": (ms.GCSpec(5, 5, 5, 10, normalize=True, eps_train=0.0035), 128 * ms.BLOCK),
}


def jax_rate(spec, p, n: int) -> float:
    key = [jax.random.PRNGKey(0)]
    chunk = ms.auto_chunk(spec)
    ms.guess_and_check(key, [p], spec, ms.BLOCK, chunk)  # compile
    t = time.perf_counter()
    ms.guess_and_check(key, [p], spec, n, chunk)
    return n / (time.perf_counter() - t)


def numpy_rate(spec, p, n: int) -> float:
    rng = np.random.default_rng(0)
    chunk = ms.auto_chunk(spec)
    t = time.perf_counter()
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        draws = rng.standard_normal((m, spec.n_params))
        ms.numpy_guess_and_check(draws, p, spec)
    return n / (time.perf_counter() - t)


if __name__ == "__main__":
    smoke = "--smoke" in sys.argv
    p = ms.make_problem(0)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); load average before: "
          f"{os.getloadavg()[0]:.2f}")
    print("| case | samples | JAX samples/s | NumPy samples/s | JAX / NumPy |")
    print("|---|---|---|---|---|")
    for name, (spec, n) in CASES.items():
        n = ms.BLOCK if smoke else n
        j, q = jax_rate(spec, p, n), numpy_rate(spec, p, n)
        print(f"| {name} | {n:,} | {j:,.0f} | {q:,.0f} | {j / q:.2f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
