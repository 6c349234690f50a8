"""Every benchmark script runs (``--smoke``: tiny sizes), so ``make bench`` cannot silently break.

Each prints its figure; the test reads it back and checks it is a positive number.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

# script -> a regular expression for the figure it prints (group 1: a number that must be > 0)
FIGURES = {
    "bench_train.py": r"beyond_theorem/L6\s+2\s+([\d,]+)",
    "bench_table1.py": r"wall time, compile included, no compile cache: ([\d.]+) s",
    "bench_chains.py": r"wall time, compile included, no compile cache: ([\d.]+) s",
    "bench_models.py": r"\| s4d \| \d+ \| ([\d.]+) \|",
    "bench_poison_synthetic.py": r"wall time ([\d.]+) s",
    "bench_torch_s4d.py": r"ratio PyTorch / JAX time: ([\d.]+)",
    "bench_backend.py": r"ray/local wall-time ratio: ([\d.]+)",
    "bench_gc.py": r"\| width 160 / depth 2 \| [\d,]+ \| ([\d,]+) \|",
    "bench_knockout.py": r"ratio loop / batched: ([\d.]+)x",
    "bench_knockout_130m.py": r"pipeline ([\d.]+) s per prompt",
    "bench_grpo.py": r"whole step JAX / PyTorch: ([\d.]+)x",
}


def test_every_benchmark_is_smoke_tested():
    assert sorted(FIGURES) == sorted(p.name for p in BENCH.glob("bench_*.py"))


# every smoke (9-15 s each: a fresh process that imports JAX and compiles) runs with the
# slow set (make test-all), so that make test stays within its 5 minutes; the code they time is tested
# in the fast set
SLOW_SMOKES = {"bench_train.py", "bench_models.py", "bench_poison_synthetic.py", "bench_chains.py", "bench_table1.py",
               "bench_torch_s4d.py", "bench_gc.py", "bench_knockout.py", "bench_knockout_130m.py", "bench_grpo.py"}
RAY_SMOKES = {"bench_backend.py"}  # starts a Ray instance: with the ray tests (make test-ray)


@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW_SMOKES else
               pytest.param(s, marks=pytest.mark.ray) if s in RAY_SMOKES else s for s in sorted(FIGURES)]
)
def test_benchmark_smoke(script, tmp_path):
    if script in ("bench_torch_s4d.py", "bench_grpo.py"):
        pytest.importorskip("torch")  # the optional extra bench-torch (make bench-torch)
    if script in RAY_SMOKES:
        pytest.importorskip("ray")  # the optional extra ray (make test-ray)
    out = subprocess.run([sys.executable, str(BENCH / script), "--smoke"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    m = re.search(FIGURES[script], out.stdout)
    assert m, out.stdout[-2000:]
    assert float(m.group(1).replace(",", "")) > 0  # a speed figure: positive on any CPU (no speed threshold)
