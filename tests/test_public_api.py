"""The package root's curated public API: every name it exports exists and is documented, and
importing it loads none of the layers above the science (experiments, report, runtime, CLI)."""

import inspect
import subprocess
import sys

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
