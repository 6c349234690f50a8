"""The knockout sweep of a trained tiny model: every (window, source set) variant of a prompt in one
``vmap``-ed, compiled call (:func:`implicitbias.interp.info_flow.knockout_last_probs`), and the same with
the layers below each window computed once (:func:`implicitbias.interp.info_flow.sweep_last_probs`),
against a loop of
single compiled knockout forwards (:func:`implicitbias.interp.knockout.knockout_logits`, one variant per
call), in the same process, compile excluded (each path warmed up first), same numbers checked.

    python benchmarks/bench_knockout.py                   # the paper/mamba2 preset's model (8 layers), 300 steps
    python benchmarks/bench_knockout.py --kind mamba1 --json results/bench-knockout.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from implicitbias.experiments import knockout as ko
from implicitbias.interp import info_flow as fl
from implicitbias.interp.knockout import knockout_logits, layer_windows
from implicitbias.tasks import factual_recall as fr


def best(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timings of ``fn()`` (seconds), its result blocked on."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="mamba2", choices=["mamba1", "mamba2", "transformer"])
    ap.add_argument("--steps", type=int, default=300, help="training steps before the sweep")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--smoke", action="store_true", help="the tiny preset, 20 steps (a test that the script runs)")
    args = ap.parse_args(argv)
    preset = ko.PRESETS[f"{'tiny' if args.smoke else 'paper'}/{args.kind}"]
    cfg = ko.Config(**{**preset.__dict__, "steps": 20 if args.smoke else args.steps, "seeds": (0,)})
    task = cfg.task()
    lm = fr.train_lm(ko.make_model(cfg, task.vocab, jax.random.PRNGKey(0)), task, jax.random.PRNGKey(1),
                     steps=cfg.steps, batch=cfg.batch, lr=cfg.lr, chunk=min(100, cfg.steps)).model
    tokens = fr.sample_prompts(task, fr.facts(task), jax.random.PRNGKey(2), 1)[0][0]
    windows = layer_windows(cfg.n_layers, cfg.ws)
    sources = jnp.asarray(ko.source_masks(task, cfg.sources))
    targets = jnp.arange(task.length) == task.length - 1
    single = eqx.filter_jit(lambda w, s: jax.nn.softmax(knockout_logits(lm, tokens, w, s, targets)[-1]))

    def loop():
        return jnp.stack([jnp.stack([single(w, s) for s in sources]) for w in windows])

    t0 = time.perf_counter()
    batched = fl.knockout_last_probs(lm, tokens, windows, sources).block_until_ready()
    compile_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    shared = fl.sweep_last_probs(lm, tokens, cfg.ws, sources).block_until_ready()
    compile_shared = time.perf_counter() - t0
    t0 = time.perf_counter()
    looped = loop().block_until_ready()
    compile_single = time.perf_counter() - t0
    # same float32 ops batched or not: agreement to a few float32 ulps of the largest probability
    diff = max(float(jnp.abs(batched - looped).max()), float(jnp.abs(shared - looped).max()))
    t_batched = best(lambda: fl.knockout_last_probs(lm, tokens, windows, sources), args.repeats)
    t_shared = best(lambda: fl.sweep_last_probs(lm, tokens, cfg.ws, sources), args.repeats)
    t_loop = best(loop, args.repeats)
    n = int(windows.shape[0] * sources.shape[0])
    out = {"kind": cfg.kind, "n_layers": cfg.n_layers, "length": task.length, "variants": n,
           "batched_seconds": t_batched, "loop_seconds": t_loop, "ratio_loop_over_batched": t_loop / t_batched,
           "shared_seconds": t_shared, "ratio_loop_over_shared": t_loop / t_shared,
           "ratio_batched_over_shared": t_batched / t_shared, "compile_shared_seconds": compile_shared,
           "compile_batched_seconds": compile_batched, "first_loop_seconds": compile_single, "max_abs_diff": diff,
           "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    print(f"{cfg.kind}, {cfg.n_layers} layers, L {task.length}: {n} variants (windows x sources) per prompt")
    print(f"  one vmapped call  {1e3 * t_batched:8.1f} ms   (compile + first call {compile_batched:.1f} s)")
    print(f"  + shared layers   {1e3 * t_shared:8.1f} ms   (compile + first call {compile_shared:.1f} s; layers below "
          "a window once, head on the last position)")
    print(f"  loop of {n} calls {1e3 * t_loop:8.1f} ms   (first pass {compile_single:.1f} s)")
    print(f"  ratio loop / batched: {t_loop / t_batched:.1f}x; loop / shared: {t_loop / t_shared:.1f}x; "
          f"max |difference| {diff:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if diff <= 64 * np.finfo(np.float32).eps else 1


if __name__ == "__main__":
    raise SystemExit(main())
