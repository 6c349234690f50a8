"""Guess & Check throughput per sampler (``Config.sampler``; :mod:`implicitbias.tasks.gc_samplers`) against
the machine's normal-draw limit.

* **The limit**: standard normals per second that NumPy (SFC64, PCG64; float64 and float32) and JAX
  (Threefry, float64 and float32) write into a preallocated buffer, on 1 thread and on every core
  (one generator and buffer per thread; NumPy releases the GIL while it fills). The best of them is
  the machine's normal-draw limit: no direct sampler can draw its ``n_params`` normals per sample
  faster. The uniform fill (the uniform prior's limit) beside it.
* **The samplers**, on seed 0's problem, through
  :func:`implicitbias.tasks.matrix_sensing.guess_and_check` (compile excluded by a warm-up):
  ``direct-jax`` (the original JAX sampler, the stream of every stored run: "today's sampler"),
  ``direct`` (NumPy, 1 thread and every core) and ``bartlett`` (exact for the linear Gaussian prior;
  at width 5 = n_rows ``auto`` picks direct) for width 5 and 160 at depth 2 (the width sweep: eps 0.02)
  and width 5 at depth 10 (the depth sweep's deepest: normalised, eps 0.0035), and the direct sampler
  alone for tanh, leaky ReLU and the uniform prior.

Prints samples per second of wall time and per CPU second (all threads; on a shared CPU the wall
time measures the load as much as the code), the direct sampler's draws per second as a fraction of
the limit, Bartlett over today's sampler, the device and the load average.

    python benchmarks/bench_gc.py [--smoke]      (--smoke: one block per measurement; a test runs it)
"""

import os
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from implicitbias.core.precision import enable_float64
from implicitbias.tasks import gc_samplers as gs
from implicitbias.tasks import matrix_sensing as ms

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)

B = ms.BLOCK
CORES = gs.default_threads()
W160 = dict(n_rows=5, n_cols=5, width=160, depth=2, eps_train=0.02)
W5 = dict(n_rows=5, n_cols=5, width=5, depth=2, eps_train=0.02)
D10 = dict(n_rows=5, n_cols=5, width=5, depth=10, normalize=True, eps_train=0.0035)
CASES = {  # name -> (spec fields, blocks timed per sampler: direct-jax, direct, bartlett; 0 = not run)
    "width 160 / depth 2": (W160, (8, 48, 512)),
    "width 5 / depth 2": (W5, (128, 512, 512)),
    "width 5 / depth 10": (D10, (64, 128, 128)),
    "width 160 / depth 2 tanh": (dict(W160, activation="tanh"), (0, 48, 0)),
    "width 5 / depth 10 leaky_relu": (dict(D10, activation="leaky_relu"), (0, 128, 0)),
    "width 160 / depth 2 unif": (dict(W160, prior="unif"), (0, 48, 0)),
}


def _timed(fn) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of the whole process)`` of ``fn()``."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


# --------------------------------------------------------------------------------------------
# the limit
# --------------------------------------------------------------------------------------------


def numpy_fill_rate(bit_generator, dtype, threads: int, reps: int, uniform: bool = False, size: int = 1 << 20):
    """Numbers per wall second that ``threads`` threads (own generator and preallocated buffer each) write."""

    def work(i):
        rng = np.random.Generator(bit_generator(i))
        buf = np.empty(size, dtype)
        fill = (lambda: rng.random(out=buf, dtype=dtype)) if uniform else \
            (lambda: rng.standard_normal(out=buf, dtype=dtype))
        fill()
        barrier.wait()
        for _ in range(reps):
            fill()

    barrier = threading.Barrier(threads + 1)
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return threads * reps * size / (time.perf_counter() - t0)


def jax_normal_rate(dtype, reps: int, size: int = 1 << 22) -> float:
    f = jax.jit(lambda k: jax.random.normal(k, (size,), dtype))
    key = jax.random.PRNGKey(0)
    f(key).block_until_ready()
    wall, _ = _timed(lambda: [f(jax.random.fold_in(key, i)).block_until_ready() for i in range(reps)])
    return reps * size / wall


def limits(smoke: bool) -> tuple[dict, dict, dict]:
    """``({threads: normal limit}, {threads: uniform limit}, {source: rate})`` (numbers per wall second)."""
    reps = 2 if smoke else 40
    rows, normal, uniform = {}, {}, {}
    for threads in sorted({1, CORES}):
        for bg in (np.random.SFC64, np.random.PCG64):
            for dt in (np.float64, np.float32):
                rows[f"NumPy {bg.__name__} {dt.__name__} normal, {threads} thread(s)"] = r = \
                    numpy_fill_rate(bg, dt, threads, reps)
                normal[threads] = max(normal.get(threads, 0.0), r)
        rows[f"NumPy SFC64 float64 uniform, {threads} thread(s)"] = uniform[threads] = \
            numpy_fill_rate(np.random.SFC64, np.float64, threads, reps, uniform=True)
    for dt in (jnp.float64, jnp.float32):  # one call; XLA picks its own threads
        rows[f"JAX threefry {dt.__name__} normal, XLA's threads"] = r = jax_normal_rate(dt, max(1, reps // 4))
        normal[CORES] = max(normal[CORES], r)
    return normal, uniform, rows


# --------------------------------------------------------------------------------------------
# the samplers
# --------------------------------------------------------------------------------------------


def sampler_rate(spec, p, blocks: int, threads: int) -> tuple[float, float]:
    """``(samples per wall second, samples per CPU second)`` of ``guess_and_check`` on ``blocks`` blocks."""
    key, n = [jax.random.PRNGKey(0)], blocks * B
    ms.guess_and_check(key, [p], spec, B, 0, threads)  # compile (direct-jax), warm the threads
    wall, cpu = _timed(lambda: ms.guess_and_check(key, [p], spec, n, 0, threads))
    return n / wall, n / max(cpu, 1e-9)


def _f(x):
    return "-" if x is None else f"{x:,.0f}"


if __name__ == "__main__":
    smoke = "--smoke" in sys.argv
    p = ms.make_problem(0)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {CORES} core(s) for this process; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    normal, uniform, rows = limits(smoke)
    print("\n| normal-draw source | numbers/s |\n|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r:,.0f} |")
    for t in sorted(normal):
        print(f"machine's normal-draw limit, {t} thread(s): {normal[t]:,.0f} normals/s "
              f"(uniform: {uniform[t]:,.0f}/s)")
    print(f"\nsamples per wall second (direct and bartlett on 1 thread and on {CORES}; direct-jax: XLA's threads):")
    print(f"| case | samples (direct-jax) | direct-jax samples/s | direct samples/s, 1 thread | "
          f"direct, {CORES} threads | bartlett, 1 thread | bartlett, {CORES} threads | "
          f"direct draws / limit, 1 thread | direct draws / limit, {CORES} threads | bartlett / direct-jax |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cpu_rows, summary = [], {}
    for name, (fields, (nj, nd, nb)) in CASES.items():
        base = ms.GCSpec(**fields)
        one = (lambda k: min(k, 1)) if smoke else (lambda k: k)
        r = {}
        if nj:
            r["jax"] = sampler_rate(base, p, one(nj), 0)
        for t in sorted({1, CORES}):
            r[f"direct{t}"] = sampler_rate(ms.GCSpec(**fields, sampler="direct"), p, one(nd), t)
            if nb:
                r[f"bartlett{t}"] = sampler_rate(ms.GCSpec(**fields, sampler="bartlett"), p, one(nb), t)
        lim = uniform if base.prior == "unif" else normal
        frac = {t: r[f"direct{t}"][0] * base.n_params / lim[t] for t in sorted({1, CORES})}
        w = {k: v[0] for k, v in r.items()}
        bj = w[f"bartlett{CORES}"] / w["jax"] if "jax" in w and f"bartlett{CORES}" in w else None
        print(f"| {name} | {f'{one(nj) * B:,}' if nj else '-'} | {_f(w.get('jax'))} | {_f(w['direct1'])} | "
              f"{_f(w[f'direct{CORES}'])} | {_f(w.get('bartlett1'))} | {_f(w.get(f'bartlett{CORES}'))} | "
              f"{frac[1]:.2f} | {frac[CORES]:.2f} | {'-' if bj is None else f'{bj:.1f}x'} |", flush=True)
        cpu_rows.append((name, {k: v[1] for k, v in r.items()}))
        summary[name] = (w, frac, bj)
    print("\nsamples per CPU second (all threads of the process):")
    print(f"| case | direct-jax | direct, 1 thread | direct, {CORES} threads | bartlett, 1 thread | bartlett, {CORES} "
          "threads |\n|---|---|---|---|---|---|")
    for name, c in cpu_rows:
        print(f"| {name} | {_f(c.get('jax'))} | {_f(c['direct1'])} | {_f(c[f'direct{CORES}'])} | "
              f"{_f(c.get('bartlett1'))} | {_f(c.get(f'bartlett{CORES}'))} |")
    w, _, bj = summary["width 160 / depth 2"]
    print(f"\nBartlett at width 160 / today's sampler (direct-jax), {CORES} threads: {bj:.1f}x (target >= 20x)")
    worst = min(min(f.values()) for _, f, _ in summary.values())
    print(f"direct sampler's draws / the machine's limit, worst case: {worst:.2f} (target >= 0.5: within 2x)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
