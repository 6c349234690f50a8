"""The package root's curated public API: every name it exports exists and is documented, and
importing it loads none of the layers above the science (experiments, report, runtime, CLI)."""

import inspect
import json
import subprocess
import sys

import pytest

import implicitbias


def test_every_exported_name_exists_and_is_documented():
    assert len(implicitbias.__all__) == len(set(implicitbias.__all__))
    for name in implicitbias.__all__:
        obj = getattr(implicitbias, name)  # AttributeError if the export list names something absent
        if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismodule(obj):
            assert (obj.__doc__ or "").strip(), f"implicitbias.{name} has no docstring"


def test_the_exports_are_the_objects_of_their_modules():
    from implicitbias.core import ssm, train
    from implicitbias.record import Record

    assert implicitbias.DiagonalSSM is ssm.DiagonalSSM and implicitbias.train_batched is train.train_batched
    assert implicitbias.Record is Record


def test_importing_the_package_loads_no_layer_above_the_science():
    code = ("import sys, implicitbias; print(sorted(m for m in sys.modules if m.startswith(tuple("
            "'implicitbias.' + p for p in ('experiments', 'report', 'runtime', 'cli')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_the_package_leaves_jax_in_32_bit_mode():
    code = "import jax, implicitbias, implicitbias.experiments; print(jax.config.jax_enable_x64)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_experiment_run_switches_on_float64():
    from implicitbias.experiments import EXPERIMENTS

    assert all(getattr(exp.run, "enables_float64", False) for exp in EXPERIMENTS.values())


@pytest.mark.slow  # a fresh process importing JAX and compiling (14 s); the fast suite checks every run is decorated
def test_a_run_from_a_fresh_import_gives_the_numbers_of_a_float64_process():
    # the conftest switched float64 on before anything ran; a fresh process switches it on in run()
    from dataclasses import replace

    from implicitbias.experiments import table1

    cfg = replace(table1.PRESETS["beyond_theorem/L6"], seeds=(200,), max_steps=300, log_every=100)
    m = table1.run(cfg).metrics
    here = [m["train_loss"], m["final_effective_rank"]]
    code = ("import json, jax; from dataclasses import replace; from implicitbias.experiments import table1; "
            "cfg = replace(table1.PRESETS['beyond_theorem/L6'], seeds=(200,), max_steps=300, log_every=100); "
            "m = table1.run(cfg).metrics; "
            "print(json.dumps([jax.config.jax_enable_x64, [m['train_loss'], m['final_effective_rank']]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    x64, there = json.loads(out.stdout.strip().splitlines()[-1])
    assert x64 is True and there == here  # the same program on the same machine: bit for bit
