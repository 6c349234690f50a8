"""benchmarks/bench_grpo.py: its PyTorch GRPO step is the same computation as ours, and its --quick run works.

The slow smoke runs the script as ``--quick --json`` in a fresh process (the equivalence check on copied
weights, then the mini timings: ~25 s on 2 cores, most of it JAX compiling) and asserts, from the file it
writes, that the PyTorch policy computes our function (full-forward logits, the cached prefill + steps,
greedy samples), that its GRPO loss, KL and accumulated gradient are ours, and that the timings are
complete and consistent. PyTorch is an optional extra (bench-torch): without it the smoke is skipped; the
script's own one-line exit without PyTorch is checked in the fast set.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_grpo.py"


@pytest.mark.slow  # ~25 s: a fresh process that imports JAX and PyTorch and compiles the sampler and the update
def test_quick_run_the_torch_step_is_ours(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed (optional extra bench-torch: pip install torch==2.13.0)")
    out_json = tmp_path / "bench.json"
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out_json)], capture_output=True,
                         text=True, timeout=240, cwd=tmp_path, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "whole step JAX / PyTorch:" in out.stdout and "torch.set_num_threads(" in out.stdout
    rec = json.loads(out_json.read_text())
    eq = rec["equivalence"]
    assert (eq["size"], eq["sequences"], eq["length"]) == ("mini", 64, 93 + 82)
    # float32 both sides, the same network (d_model 64, 2 layers, 175 tokens) in another operation order: logits
    # of size ~10 agree to ~10 ulps (measured 7e-6); a wrong rotary layout, norm or mask is off by O(0.1..1)
    assert eq["logits_scale"] > 3  # O(1)-sized logits: every weight and norm matters
    assert eq["logits_max_abs"] <= 1e-4
    assert eq["logits_math_attention_max_abs"] <= 1e-4
    assert eq["cached_logits_max_abs"] <= 1e-4  # the PyTorch cache (prefill + 81 steps) against our full forward
    # greedy decoding through both caches: 64 x 82 tokens, the same (logit gaps >> 1e-5 for these weights)
    assert eq["greedy_token_agreement"] == 1.0
    # the GRPO loss and KL of the same tokens (random advantages, another reference: both O(1)), and the
    # gradient accumulated group by group: float32 sums over 64 x 82 tokens, measured 1e-8..1e-7 and 2e-6
    assert abs(eq["loss"]) > 0.1 and eq["kl"] > 0.1
    assert eq["loss_rel"] <= 1e-5 and eq["kl_rel"] <= 1e-5
    assert eq["grad_max_rel"] <= 1e-4
    assert rec["threads"] >= 1
    (r,) = rec["results"]  # --quick: mini only
    assert (r["size"], r["completions"], r["prompt_tokens"], r["max_new"], r["repeats"]) == ("mini", 64, 93, 82, 2)
    for side in ("jax", "torch"):
        d = r[side]
        assert d["generation_s"] > 0 and d["update_s"] > 0 and 0 < d["prefill_s"]
        assert d["generation_tokens_per_s"] == pytest.approx(64 * 82 / d["generation_s"])
        assert d["update_tokens_per_s"] == pytest.approx(64 * (93 + 82) / d["update_s"])
        assert d["step_s"] == pytest.approx(d["generation_s"] + d["update_s"])
    q = r["ratio_jax_over_torch"]
    assert q["step"] == pytest.approx(r["torch"]["step_s"] / r["jax"]["step_s"])
    assert all(v > 0 for v in q.values())  # a speed ratio: positive on any CPU (no speed threshold)


def test_script_without_torch_exits_2_with_one_line(tmp_path):
    (tmp_path / "torch.py").write_text("raise ImportError('hidden for the test')\n")
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "PyTorch is not installed" in lines[0]
