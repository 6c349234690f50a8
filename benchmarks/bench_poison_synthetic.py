"""Synthetic validation of the gradient-matching attack and its wall time.

Runs :mod:`implicitbias.poison.synthetic` on Table 1's beyond-Theorem L=6 setting (4 seeds) and
prints, per seed, the extrapolation error (horizon 40) of the clean student, the students retrained
on the matched poisons and on the random-perturbation controls (and on the theory's special
sequences, for reference), whether each fit its data, and the share of the perturbation's energy at
the last positions for matched vs random perturbations.

    .venv/bin/python benchmarks/bench_poison_synthetic.py [--eps 1.0] [--penalties 0 1] [--seeds 200 201 204 205]
        [--mode duplicate|replace] [--train-optimizer adam --train-lr 0.01] [--smoke]
    (--smoke: one seed, one penalty, 2 iterations, 1 restart; a test runs it)
"""

import argparse
import time

from implicitbias.experiments import table1
from implicitbias.poison import synthetic
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="beyond_theorem/L6")
    ap.add_argument("--eps", type=float, default=1.0)
    ap.add_argument("--penalties", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[])
    ap.add_argument("--iterations", type=int, default=250)
    ap.add_argument("--restarts", type=int, default=8)
    ap.add_argument("--mode", default="duplicate", choices=["duplicate", "replace"])
    ap.add_argument("--train-optimizer", default="", help="victim optimizer (default: the preset's adaptive_gd)")
    ap.add_argument("--train-lr", type=float, default=0.0)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs")
    args = ap.parse_args()
    if args.smoke:
        args.seeds, args.penalties, args.iterations, args.restarts = [200], [0.0], 2, 1
    cfg = synthetic.SyntheticConfig(task=table1.PRESETS[args.base], eps=args.eps, penalties=tuple(args.penalties),
                                    seeds=tuple(args.seeds), iterations=args.iterations, restarts=args.restarts,
                                    mode=args.mode, train_optimizer=args.train_optimizer, train_lr=args.train_lr)
    start = time.perf_counter()
    result = synthetic.run(cfg)
    wall = time.perf_counter() - start
    print(synthetic.table(result, cfg))
    brew = sum(r["times"]["brew_s"] for r in result["per_seed"])
    print(f"\nwall time {wall:.1f} s (brewing {brew:.1f} s, compile included) for {len(result['seeds'])} seeds")
