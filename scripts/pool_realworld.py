"""Pool stored realworld runs that differ only in their seeds: paired differences of test error
(poisoned minus clean / uniform control / end control) with a 95% t-interval over all their seeds.

    python scripts/pool_realworld.py 's4d/digits/last[mode=replace]'   # every run whose preset starts so

Refused: runs of different roles (a preset's own seeds are its discovery seeds; the same preset on
other seeds is a replication, reported apart, never pooled with them), runs made under different
library versions or backends (``meta.json``'s ``versions``), runs whose seeds repeat.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from implicitbias.experiments import realworld as rw
from implicitbias.core.stats import t_interval
from implicitbias.report.common import preset_overrides
from implicitbias.runtime.store import Store
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)


def role(run) -> str:
    """``discovery`` (the preset's own seeds), ``replication`` (only the seeds changed) or ``custom``."""
    over = preset_overrides(run, rw.PRESETS)
    return "replication" if set(over) == {"seeds"} else "custom" if over else "discovery"


def refuse_mixed(runs) -> None:
    """SystemExit naming the runs when they mix roles or library versions."""
    roles = {r.path.name: role(r) for r in runs}
    if len(set(roles.values())) > 1:
        raise SystemExit("error: the matching runs mix roles (discovery seeds and replication seeds are reported "
                         f"apart, never pooled): {', '.join(f'{k}: {v}' for k, v in sorted(roles.items()))}")
    versions = {json.dumps(r.meta.get("versions"), sort_keys=True) for r in runs}
    if len(versions) > 1:
        which = "; ".join(f"{r.path.name}: {r.meta.get('versions')}" for r in runs)
        raise SystemExit(f"error: the matching runs were made under different library versions or backends: {which}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prefix", help="preset name prefix of the runs to pool")
    ap.add_argument("--runs-dir", default="runs")
    args = ap.parse_args(argv)
    runs = [r for r in Store(args.runs_dir).runs(rw.NAME) if (r.preset or "").startswith(args.prefix)]
    if not runs:
        raise SystemExit(f"error: no stored realworld run whose preset starts with {args.prefix!r}")
    configs = {json.dumps({k: v for k, v in r.config.items() if k != "seeds"}, sort_keys=True) for r in runs}
    if len(configs) > 1:
        raise SystemExit("error: the matching runs differ in more than their seeds; give a longer prefix")
    refuse_mixed(runs)
    seeds = [s for r in runs for s in r.metrics["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: seeds repeat across the matching runs: {sorted(seeds)}")
    diffs: dict[str, list[float]] = {v: [] for v in ("clean", "uniform", "end")}
    for r in runs:
        err = {v: 1 - np.asarray(r.metrics[f"{v}_test_acc"], float) for v in rw.VARIANTS}
        for v in diffs:
            diffs[v] += (err["poisoned"] - err[v]).tolist()
    print(f"{len(runs)} {role(runs[0])} runs, seeds {sorted(seeds)}")
    for v, d in diffs.items():
        mean, half = t_interval(d)
        print(f"poisoned - {v:8s} test error: {100 * mean:+.2f} ± {100 * half:.2f} points (95% t, n={len(d)}); "
              f"per seed {np.round(100 * np.asarray(d), 2).tolist()}")


if __name__ == "__main__":
    main()
