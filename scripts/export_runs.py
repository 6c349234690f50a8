"""Write the machine-made ``results/<name>.json`` of an experiment from a run store.

    python scripts/export_runs.py chains --runs-dir runs --out results/chains.json
    python scripts/export_runs.py defense --runs-dir runs --presets realworld/authors-cpu/s4d/italypower

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
from implicitbias.store import Store, atomic_write


def export(store: Store, name: str, presets: list[str] | None = None) -> dict:
    """``{"experiment", "runs": [{"run", "preset", "config", "metrics", "meta"}], "rows": [...]}``."""
    runs = [r for r in store.runs(name) if presets is None or r.preset in presets]
    section = SECTIONS.get(name)
    rows = section.rows(runs) if section is not None and runs else []
    return {
        "experiment": name,
        "note": f"every stored {name} run{' of ' + ', '.join(presets) if presets else ''}: config, metrics per "
                "seed, meta (versions, backend, wall time); arrays not included; rows: the report's",
        "runs": [{"run": r.path.name, "preset": r.preset, "config": r.config, "metrics": r.metrics, "meta": r.meta}
                 for r in runs],
        "rows": rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", choices=list(experiments.EXPERIMENTS))
    ap.add_argument("--runs-dir", default=os.environ.get("IMPLICITBIAS_RUNS", "runs"))
    ap.add_argument("--out", help="default: results/<experiment>.json")
    ap.add_argument("--presets", nargs="+", help="only these presets")
    args = ap.parse_args(argv)
    data = export(Store(args.runs_dir), args.experiment, args.presets)
    if not data["runs"]:
        print(f"no stored {args.experiment} runs in {args.runs_dir}", file=sys.stderr)
        return 2
    out = args.out or f"results/{args.experiment}.json"
    atomic_write(out, (json.dumps(strict_json(data), indent=1) + "\n").encode())
    print(f"{out}: {len(data['runs'])} runs, {len(data['rows'])} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
