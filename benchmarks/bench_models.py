"""Clean accuracy and training speed of the S4D, LRU and Mamba2 classifiers on digits.

For each model with the default small configs (``ClassifierConfig(kind=...)``, ``TrainConfig()``:
d_model 32, d_state 16, 2 layers, mean readout, layer norm; AdamW lr 1e-2, 60 epochs, batch 64)
on scikit-learn digits (1,000 train / 797 test, length-64 row-major sequences, seed 0), prints the
clean test accuracy and loss, the wall time of the whole training (compilation included), and the
steady-state optimiser steps per second, measured on a second, already-compiled short run.
Target: >= 90% clean test accuracy within a few minutes per model on a 2-core CPU.

    python benchmarks/bench_models.py [s4d lru mamba2] [--smoke]
    (--smoke: S4D only unless named, 200 training digits, 1 epoch; a test runs it)
"""

import os
import sys
import time
from dataclasses import replace

import jax

from implicitbias.datasets import load_digits
from implicitbias.models import KINDS, ClassifierConfig, make_classifier
from implicitbias.models.training import TrainConfig, evaluate, train_classifier
from implicitbias.core.precision import enable_float64

enable_float64()  # the papers' precision: JAX's 64-bit mode (implicitbias.core.precision)

if __name__ == "__main__":
    smoke = "--smoke" in sys.argv
    kinds = [a for a in sys.argv[1:] if a != "--smoke"] or (["s4d"] if smoke else list(KINDS))
    data = load_digits(n_train=200 if smoke else 1000, seed=0, scan="row")
    tc = TrainConfig(epochs=1) if smoke else TrainConfig()
    print(f"digits: train {data.x_train.shape}, test {data.x_test.shape}; {tc}")
    print(f"load average at start (1, 5, 15 min): {os.getloadavg()}; {os.cpu_count()} CPUs")
    rows = []
    for kind in kinds:
        cfg = ClassifierConfig(kind=kind, d_input=data.d_input, n_classes=data.n_classes)
        model0 = make_classifier(cfg, 0)
        n_params = sum(x.size for x in jax.tree.leaves(model0) if hasattr(x, "size"))
        model, hist = train_classifier(model0, data.x_train, data.y_train, tc)
        ev = evaluate(model, data.x_test, data.y_test)
        short = replace(tc, epochs=1 if smoke else 3)
        train_classifier(model0, data.x_train, data.y_train, short)  # compile
        t0 = time.perf_counter()
        _, h2 = train_classifier(model0, data.x_train, data.y_train, short, key=jax.random.PRNGKey(1))
        steps_per_s = h2["steps"] / (time.perf_counter() - t0)
        rows.append(
            (
                kind,
                n_params,
                ev["accuracy"],
                ev["loss"],
                hist["accuracy"][-1],
                hist["time_s"],
                hist["steps"],
                steps_per_s,
            )
        )
        print(f"  {kind}: done ({hist['time_s']:.1f} s)", flush=True)
    print(f"load average at end (1, 5, 15 min): {os.getloadavg()}")
    print()
    print(
        "| model | params | clean test acc | test loss | final train acc | train time (s, incl. compile) | steps "
        "| steps/s (warm) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, n, acc, loss, tr_acc, t, steps, sps in rows:
        print(f"| {kind} | {n} | {acc:.4f} | {loss:.4f} | {tr_acc:.4f} | {t:.1f} | {steps} | {sps:.1f} |")
