"""The authors'-protocol runs and their machine-made summary ``results/realworld-authors.json``.

    python scripts/realworld_authors.py --run            # run authors-cpu/* (5 seeds each; resumable), then write
    python scripts/realworld_authors.py                  # only (re)write the JSON from the stored runs
    python scripts/realworld_authors.py --run --presets authors-cpu/s4d/mnist1d   # one preset
    python scripts/realworld_authors.py --run --presets authors-cpu/lru/mnist1d --seeds 5 6 7 8 9  # replication

Runs go through the library's store (``--runs-dir``, default ``$IMPLICITBIAS_RUNS`` or ``runs``): a
finished preset is skipped. Each finished seed is kept under ``<runs-dir>/realworld/.seeds-<hash>/`` until
its preset is stored, so an interrupted job loses at most the seed in progress; the stored run is
``cp.collect`` over the seeds in order, exactly what ``implicitbias run realworld --preset P``
stores (its ``wall_seconds``: the seeds' sum). The JSON holds every stored ``authors/`` and
``authors-cpu/`` run of that store (:func:`implicitbias.report.realworld.authors_results`); its Holm
correction is over every comparison of the store's real-world section.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

from implicitbias.experiments import realworld

from implicitbias.tasks import classifier_poisoning as cp
from implicitbias.record import strict_json
from implicitbias.report import realworld as report_rw
from implicitbias.runtime.store import Store, atomic_write
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)

CPU_PRESETS = [p for p in realworld.PRESETS if p.startswith("authors-cpu/")]


def run_preset(store: Store, preset: str, seeds: tuple[int, ...] | None = None) -> str:
    """Run (or finish) one preset seed by seed with per-seed checkpoints (``seeds``: other seeds than the
    preset's, e.g. replication seeds; stored as the preset with that override); returns a line for the log."""
    cfg = realworld.PRESETS[preset]
    if seeds:
        cfg = replace(cfg, seeds=tuple(seeds))
    if store.is_complete(realworld.NAME, cfg):
        return f"{preset}: stored already"
    final = store.run_dir(realworld.NAME, cfg)
    cache = final.parent / f".seeds-{final.name}"  # hidden: the store skips it
    cache.mkdir(parents=True, exist_ok=True)
    per, walls = [], []
    for s in cfg.seeds:
        f = cache / f"seed{s}.pkl"
        if f.exists():
            d, w = pickle.loads(f.read_bytes())
        else:
            t0 = time.perf_counter()
            d = cp.run_seed(cfg, s).record
            w = time.perf_counter() - t0
            atomic_write(f, pickle.dumps((d, w)))
            print(f"{time.strftime('%H:%M:%S')} {preset} seed {s}: {w:.0f} s; test acc "
                  + " ".join(f"{v} {100 * d[v]['test_acc']:.2f}" for v in realworld.VARIANTS), flush=True)
        per.append(d)
        walls.append(w)
    record = cp.collect(cfg, per, sum(walls))
    store.save(realworld.NAME, cfg, record, preset=preset, wall_seconds=sum(walls), replace=False)
    return f"{preset}: stored ({sum(walls):.0f} s over {len(walls)} seeds)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default=os.environ.get("IMPLICITBIAS_RUNS", "runs"))
    ap.add_argument("--out", default="results/realworld-authors.json")
    ap.add_argument("--run", action="store_true", help="run the presets first (skipping stored ones)")
    ap.add_argument("--presets", nargs="+", default=CPU_PRESETS, choices=list(realworld.PRESETS), metavar="PRESET")
    ap.add_argument("--seeds", nargs="+", type=int, help="run these seeds instead of the preset's (replication)")
    args = ap.parse_args(argv)
    store = Store(args.runs_dir)
    if args.run:
        for p in args.presets:
            print(run_preset(store, p, args.seeds), flush=True)
    runs = list(store.runs(realworld.NAME))
    rows = report_rw.rows(runs)
    results = report_rw.authors_results(rows, runs)
    if not results["presets"]:
        print(f"no authors'-protocol runs stored under {args.runs_dir}", file=sys.stderr)
        return 1
    atomic_write(Path(args.out), json.dumps(strict_json(results), indent=1) + "\n")
    for p in results["presets"]:
        print(f"{p['preset']}: p_holm {p['p_holm']:.3g}; {p['verdict']}")
    print(f"wrote {args.out} ({len(results['presets'])} presets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
