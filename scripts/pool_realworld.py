"""Pool stored realworld runs that differ only in their seeds: paired differences of test error
(poisoned minus clean / uniform control / end control) with a 95% t-interval over all their seeds.

    python scripts/pool_realworld.py 's4d/digits/last[mode=replace'   # every run whose preset starts so
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from implicitbias.experiments import realworld as rw
from implicitbias.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prefix", help="preset name prefix of the runs to pool")
    ap.add_argument("--runs-dir", default="runs")
    args = ap.parse_args()
    runs = [r for r in Store(args.runs_dir).runs(rw.NAME) if (r.preset or "").startswith(args.prefix)]
    if not runs:
        raise SystemExit(f"error: no stored realworld run whose preset starts with {args.prefix!r}")
    configs = {json.dumps({k: v for k, v in r.config.items() if k != "seeds"}, sort_keys=True) for r in runs}
    if len(configs) > 1:
        raise SystemExit("error: the matching runs differ in more than their seeds; give a longer prefix")
    seeds = [s for r in runs for s in r.metrics["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: seeds repeat across the matching runs: {sorted(seeds)}")
    diffs: dict[str, list[float]] = {v: [] for v in ("clean", "uniform", "end")}
    for r in runs:
        err = {v: 1 - np.asarray(r.metrics[f"{v}_test_acc"], float) for v in rw.VARIANTS}
        for v in diffs:
            diffs[v] += (err["poisoned"] - err[v]).tolist()
    print(f"{len(runs)} runs, seeds {sorted(seeds)}")
    for v, d in diffs.items():
        mean, half = rw.t_interval(d)
        print(f"poisoned - {v:8s} test error: {100 * mean:+.2f} ± {100 * half:.2f} points (95% t, n={len(d)}); "
              f"per seed {np.round(100 * np.asarray(d), 2).tolist()}")


if __name__ == "__main__":
    main()
