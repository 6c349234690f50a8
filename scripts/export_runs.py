"""Write the machine-made ``results/<name>.json`` of an experiment from a run store.

    python scripts/export_runs.py chains --runs-dir runs --out results/chains.json
    python scripts/export_runs.py defense --runs-dir runs --presets realworld/authors-cpu/s4d/italypower \
        --drop roc_fpr roc_tpr roc                # leave out bulky per-row curves (the report redraws them)

The file holds every stored run of the experiment (optionally only ``--presets``): its directory name,
preset, config, metrics per seed and meta (library versions, backend, wall time; arrays are left out),
and the report's rows for them (``implicitbias report --json``). Re-running a run's preset with the
stored config (``implicitbias run EXPERIMENT --preset P --set ...``) reproduces its metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from implicitbias import experiments
from implicitbias.record import strict_json
from implicitbias.report.document import SECTIONS
from implicitbias.runtime.store import Store, atomic_write
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)


def _without(obj, drop: frozenset):
    """``obj`` with every dict key in ``drop`` removed, at any depth."""
    if isinstance(obj, dict):
        return {k: _without(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_without(v, drop) for v in obj]
    return obj


def export(store: Store, name: str, presets: list[str] | None = None, drop: tuple[str, ...] = ()) -> dict:
    """``{"experiment", "runs": [{"run", "preset", "config", "metrics", "meta"}], "rows": [...]}``, without
    the keys in ``drop`` (at any depth of metrics and rows)."""
    runs = [r for r in store.runs(name) if presets is None or r.preset in presets]
    section = SECTIONS.get(name)
    rows = section.rows(runs) if section is not None and runs else []
    d = frozenset(drop)
    return {
        "experiment": name,
        "note": f"every stored {name} run{' of ' + ', '.join(presets) if presets else ''}: config, metrics per "
                "seed, meta (versions, backend, wall time); arrays not included; rows: the report's",
        **({"dropped": sorted(d)} if d else {}),
        "runs": [{"run": r.path.name, "preset": r.preset, "config": r.config, "metrics": _without(r.metrics, d),
                  "meta": r.meta} for r in runs],
        "rows": _without(rows, d),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", choices=list(experiments.EXPERIMENTS))
    ap.add_argument("--runs-dir", default=os.environ.get("IMPLICITBIAS_RUNS", "runs"))
    ap.add_argument("--out", help="default: results/<experiment>.json")
    ap.add_argument("--presets", nargs="+", help="only these presets")
    ap.add_argument("--drop", nargs="+", default=[], metavar="KEY", help="leave out these keys (any depth)")
    args = ap.parse_args(argv)
    data = export(Store(args.runs_dir), args.experiment, args.presets, tuple(args.drop))
    if not data["runs"]:
        print(f"no stored {args.experiment} runs in {args.runs_dir}", file=sys.stderr)
        return 2
    out = args.out or f"results/{args.experiment}.json"
    atomic_write(out, (json.dumps(strict_json(data), indent=1) + "\n").encode())
    print(f"{out}: {len(data['runs'])} runs, {len(data['rows'])} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
