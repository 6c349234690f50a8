"""What the paper's knockout pipeline would cost on this CPU for a 130M checkpoint, measured on a randomly
initialised model of the same shape (the weights' values do not change the cost; nothing is downloaded).

Shapes: ``state-spaces/mamba-130m-hf`` (Mamba-1: d_model 768, 24 layers, N 16, expand 2, vocab 50,280)
and ``state-spaces/mamba2-130m`` (Mamba-2: d_model 768, 24 layers, N 128, headdim 64, chunk 256,
vocab 50,288). Per prompt of ``--length`` tokens it times, compile excluded: one plain forward, and the
info-flow sweep of one decay group (every window of ``--ws`` layers x 4 source sets in one vmapped call;
``full``: every layer per variant, ``sweep``: the layers below a window once, the one used for the estimate),
then extrapolates to the pipeline per prompt (evaluate + 3 decay groups + one heatmap of length x windows
variants, which runs only for the prompts drawn). Float32 parameters: 4 bytes each.

    python benchmarks/bench_knockout_130m.py --json results/bench-knockout-130m.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp

from bench_knockout import best  # the fastest of n timings (this folder is on the path of a script)
from implicitbias.interp import info_flow as fl
from implicitbias.interp.knockout import layer_windows
from implicitbias.models.lm import make_lm

SHAPES = {
    "mamba-130m": dict(kind="mamba1", vocab=50280, d_model=768, n_layers=24, d_state=16, kw={}),
    "mamba2-130m": dict(kind="mamba2", vocab=50288, d_model=768, n_layers=24, d_state=128,
                        kw=dict(headdim=64, chunk_size=256)),
}


def measure(name: str, length: int, ws: int, repeats: int) -> dict:
    s = SHAPES[name]
    t0 = time.perf_counter()
    lm = make_lm(s["kind"], s["vocab"], s["d_model"], s["n_layers"], d_state=s["d_state"], key=jax.random.PRNGKey(0),
                 **s["kw"])
    build = time.perf_counter() - t0
    params = sum(x.size for x in jax.tree_util.tree_leaves(lm) if hasattr(x, "size"))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (length,), 0, s["vocab"])
    windows = layer_windows(s["n_layers"], ws)
    idx = jnp.arange(length)
    sources = jnp.stack([(idx >= 1) & (idx < 3), idx < 0, idx == length - 1, idx == 0])  # subject, ..., last, first
    sources = sources.at[1].set(~sources[0])  # relation: every non-subject token
    t0 = time.perf_counter()
    fl.last_probs(lm, tokens).block_until_ready()
    compile_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    fl.knockout_last_probs(lm, tokens, windows, sources).block_until_ready()
    compile_sweep = time.perf_counter() - t0
    t0 = time.perf_counter()
    fl.sweep_last_probs(lm, tokens, ws, sources).block_until_ready()
    compile_shared = time.perf_counter() - t0
    fwd = best(lambda: fl.last_probs(lm, tokens), repeats)
    full = best(lambda: fl.knockout_last_probs(lm, tokens, windows, sources), repeats)
    sweep = best(lambda: fl.sweep_last_probs(lm, tokens, ws, sources), repeats)
    variants = int(windows.shape[0] * sources.shape[0])
    per_prompt = fwd + 3 * sweep  # evaluate + the three decay groups (all, fast, slow)
    heat = sweep * length / sources.shape[0]  # one heatmap: length x windows variants, at the sweep's rate
    return {"model": name, "parameters": int(params), "float32_bytes": int(4 * params), "length": length, "ws": ws,
            "windows": int(windows.shape[0]), "variants_per_sweep": variants, "build_seconds": build,
            "compile_forward_seconds": compile_fwd, "compile_sweep_seconds": compile_sweep,
            "compile_shared_sweep_seconds": compile_shared, "full_sweep_seconds": full,
            "forward_seconds": fwd, "sweep_seconds": sweep, "per_variant_seconds": sweep / variants,
            "pipeline_seconds_per_prompt": per_prompt, "heatmap_seconds": heat,
            "hours_per_1000_prompts": 1000 * per_prompt / 3600}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--length", type=int, default=12, help="prompt tokens (CounterFact prompts: about 5-20)")
    ap.add_argument("--ws", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--smoke", action="store_true", help="a tiny shape (a test that the script runs)")
    args = ap.parse_args(argv)
    if args.smoke:
        SHAPES["smoke"] = dict(kind="mamba1", vocab=100, d_model=16, n_layers=3, d_state=4, kw={})
        args.models, args.ws, args.length, args.repeats = ["smoke"], 2, 6, 1
    out = {"cpus": os.cpu_count(), "load_average_before": os.getloadavg(), "runs": []}
    for name in args.models:
        r = measure(name, args.length, args.ws, args.repeats)
        out["runs"].append(r)
        print(f"{name}: {r['parameters'] / 1e6:.1f}M parameters ({r['float32_bytes'] / 2**30:.2f} GiB float32), "
              f"L {r['length']}: forward {1e3 * r['forward_seconds']:.0f} ms; sweep of {r['variants_per_sweep']} "
              f"variants {r['sweep_seconds']:.2f} s (every layer per variant: {r['full_sweep_seconds']:.2f} s; compile "
              f"{r['compile_shared_sweep_seconds']:.0f} s / {r['compile_sweep_seconds']:.0f} s); pipeline "
              f"{r['pipeline_seconds_per_prompt']:.3g} s per prompt = {r['hours_per_1000_prompts']:.1f} h per 1000 "
              f"prompts, + {r['heatmap_seconds']:.1f} s per heatmap", flush=True)
    out["load_average_after"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
