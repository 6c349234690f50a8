"""The realworld lever sweep (docs/science.md §4): one grid of stored runs, on this machine or a Ray cluster.

Each job is one stored run (one config, 5 seeds) of ``implicitbias run realworld`` made through the
library's runner, store and backends (:mod:`implicitbias.runtime.backends`), so the sweep is resumable: a
stored job is skipped before anything is submitted, an interrupted one is redone. The grid varies
one lever at a time around the ``s4d/digits/{mean,last}`` presets (ℓ∞ budget, poison fraction,
number of clean examples, end-of-sequence penalty, normalisation, replace mode, attack iterations
and restarts), adds the other models' presets, and a few combinations of the strongest levers.

    python scripts/sweep_realworld.py --list                          # the jobs, numbered
    python scripts/sweep_realworld.py                                 # all of them, here, one after another
    python scripts/sweep_realworld.py --backend ray --cpus-per-run 2  # a local Ray instance, all cores
    python scripts/sweep_realworld.py --backend ray --address auto --only 0-29 --gpus-per-heavy-run 1
    implicitbias report                                               # the realworld section has a sweep table

On Ray, the jobs marked heavy (Mamba2, long attacks) ask for ``--gpus-per-heavy-run`` GPUs (default:
the same resources as the others); Ctrl-C cancels what is running and keeps every finished job.
"""

from __future__ import annotations

import argparse
import os
import sys
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)

BASES = ("s4d/digits/mean", "s4d/digits/last")
# one lever at a time around each base preset (preset values: eps 4, poison_frac 0.5, n_train 1000,
# penalty 0, norm on, duplicate mode, 50 iterations x 1 restart)
LEVERS = (
    ("eps=1",), ("eps=2",), ("eps=8",), ("eps=16",),
    ("poison_frac=0.1",), ("poison_frac=0.25",), ("poison_frac=1.0",),
    ("n_train=200",), ("n_train=500",),
    ("penalty=1",), ("penalty=10",), ("penalty=100",),
    ("norm=false",), ("mode=replace",),
    ("iterations=250", "restarts=4"),
)
# the strongest levers together (theory: few clean examples, large end-concentrated perturbations,
# no normalisation, last-step readout)
COMBOS = (
    ("s4d/digits/last", ("eps=16", "penalty=10", "norm=false", "n_train=200", "poison_frac=1.0")),
    ("s4d/digits/last", ("eps=16", "penalty=10", "mode=replace", "poison_frac=1.0")),
    ("lru/digits/last", ("eps=16",)),
    ("lru/digits/last", ("penalty=10",)),
    ("lru/digits/last", ("eps=16", "penalty=10", "norm=false", "n_train=200", "poison_frac=1.0")),
    # the two levers that showed an effect on s4d (eps=16, replace mode), on the other models
    ("lru/digits/mean", ("eps=16",)),
    ("lru/digits/mean", ("mode=replace",)),
    ("mamba2/digits/mean", ("eps=16",)),
    ("mamba2/digits/mean", ("mode=replace",)),
    # replace mode on the last-step readout was the one effect at equal fit: replicate it on five new
    # seeds, and try it on LRU
    ("s4d/digits/last", ("mode=replace", "seeds=[[5,6,7,8,9]]")),
    ("lru/digits/last", ("mode=replace",)),
)
MODELS = ("s4d", "lru", "mamba2")


def jobs() -> list[tuple[str, tuple[str, ...], bool]]:
    """``(preset, sweep items, heavy)``; heavy jobs go to the accelerator when one is used."""
    out = [(f"{m}/digits/{r}", (), m == "mamba2") for m in MODELS for r in ("mean", "last")]
    out += [(b, lever, "iterations=250" in lever) for b in BASES for lever in LEVERS]
    out += [(p, combo, p.startswith("mamba2")) for p, combo in COMBOS]
    return out


def configs_of(chosen: list[int]) -> dict[str, object]:
    """``name -> config`` of the chosen jobs, named as ``implicitbias run realworld --preset P --sweep ...``
    names them (so the report reads them the same way)."""
    from implicitbias import experiments
    from implicitbias.runtime.overrides import apply_overrides, parse_sweeps, select_presets, sweep_label

    exp = experiments.get("realworld")
    out: dict[str, object] = {}
    for i in chosen:
        preset, items, _ = jobs()[i]
        for name, cfg in select_presets(exp.PRESETS, [preset], exp.NAME).items():
            for point in parse_sweeps(exp.Config, list(items)):
                out[name + sweep_label(point)] = apply_overrides(cfg, point)
    return out


def _select(spec: str | None, n: int) -> list[int]:
    if not spec:
        return list(range(n))
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise SystemExit(f"error: --only names jobs {bad}; there are {n} (0-{n - 1})")
    return out


def _fail(message: str) -> None:
    """Bad input (a backend that cannot be used, an unwritable store): one line, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the jobs and exit")
    ap.add_argument("--only", help="job numbers, e.g. 0-5,9")
    ap.add_argument("--backend", default="local", help="local (this process, default) or ray")
    ap.add_argument("--address", help="ray: the cluster to join (auto, host:port, ray://host:port); "
                    "default: a local Ray instance")
    ap.add_argument("--cpus-per-run", type=float, help="ray: CPUs per job (default 1)")
    ap.add_argument("--gpus-per-run", type=float, help="ray: GPUs per job (default 0)")
    ap.add_argument("--gpus-per-heavy-run", type=float, help="ray: GPUs per heavy job (default: --gpus-per-run)")
    ap.add_argument("--retries", type=int, help="ray: attempts after a failed one (default 2)")
    ap.add_argument("--runs-dir", default=os.environ.get("IMPLICITBIAS_RUNS", "runs"))
    args = ap.parse_args()

    all_jobs = jobs()
    chosen = _select(args.only, len(all_jobs))
    if args.list:
        for i in chosen:
            p, items, heavy = all_jobs[i]
            print(f"{i:3d}  {p:18s} {' '.join(items) or '(preset)'}{'  [heavy]' if heavy else ''}")
        return

    from implicitbias.runtime import backends
    from implicitbias import experiments
    from implicitbias.runtime.runner import run_all
    from implicitbias.runtime.store import Store, StoreError

    try:
        configs = configs_of(chosen)
        backend = backends.make(args.backend, address=args.address, cpus_per_run=args.cpus_per_run,
                                gpus_per_run=args.gpus_per_run, retries=args.retries)
    except ValueError as e:
        _fail(str(e))
    if args.gpus_per_heavy_run is not None:
        if args.backend != "ray":
            _fail("--gpus-per-heavy-run applies only to --backend ray")
        heavy = {name for i in chosen if all_jobs[i][2] for name in configs_of([i])}
        light = (backend.cpus, backend.gpus)
        backend.resources = lambda name: (light[0], args.gpus_per_heavy_run) if name in heavy else light
    backends.enable_compile_cache()
    n = len(configs)

    def done(out) -> None:
        note = "stored, skipped" if out.skipped else f"{out.wall_seconds:.0f}s"
        if out.error:
            note = f"FAILED after {out.attempts} attempts: {out.error}"
        done.count += 1
        print(f"[{done.count}/{n}] {out.preset}: {note}", flush=True)

    done.count = 0
    try:
        outs = run_all(experiments.get("realworld"), configs, Store(args.runs_dir), backend=backend,
                       on_start=lambda name: print(f"start {name}", flush=True), on_done=done,
                       on_retry=lambda f: print(f"retry {f.key} (attempt {f.attempt} failed: {f.error})", flush=True))
    except KeyboardInterrupt:
        print("interrupted: finished jobs are stored; the running ones were cancelled", file=sys.stderr)
        backend.close()
        os._exit(130)  # XLA threads may still run the interrupted job (see implicitbias.cli)
    except (StoreError, ValueError) as e:
        backend.close()
        _fail(str(e))
    backend.close()
    failed = [o.preset for o in outs if o.error]
    print(f"done: {n - len(failed)} of {n} stored" + (f"; failed: {failed}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
