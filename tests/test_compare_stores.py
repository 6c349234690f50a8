"""scripts/compare_stores.py, the check behind "every number unchanged" after a refactor: runs that
differ only in wall times (also inside nested dicts, and rates measured with them) are identical; a
changed metric or array is found and the script exits 1."""

import importlib.util
from pathlib import Path

import numpy as np

from implicitbias.experiments import table1
from implicitbias.record import Record
from implicitbias.runtime.store import Store

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_stores.py"
spec = importlib.util.spec_from_file_location("compare_stores", SCRIPT)
compare_stores = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_stores)

CFG = table1.PRESETS["beyond_theorem/L6"]


def _store(root: Path, error: float, detect_s: float, rate: float, a: float) -> Path:
    record = Record({"error": [error, 0.5], "times": {"detect_s": detect_s}, "gc_samples_per_second": rate,
                     "wall_seconds": detect_s}, {"a": np.array([a, 1.0])})
    Store(root).save("table1", CFG, record, preset="beyond_theorem/L6", wall_seconds=detect_s)
    return root


def test_timings_differ_numbers_do_not(tmp_path, capsys):
    old = _store(tmp_path / "old", 0.25, 1.0, 10.0, 2.0)
    new = _store(tmp_path / "new", 0.25, 3.0, 30.0, 2.0)
    assert compare_stores.main([str(old), str(new)]) == 0
    assert "1 presets identical, 0 differ" in capsys.readouterr().out


def test_a_changed_metric_or_array_is_found(tmp_path, capsys):
    old = _store(tmp_path / "old", 0.25, 1.0, 10.0, 2.0)
    for name, (error, a) in {"metric": (0.25 + 2**-30, 2.0), "array": (0.25, 2.0 + 2**-40)}.items():
        new = _store(tmp_path / name, error, 1.0, 10.0, a)
        assert compare_stores.main([str(old), str(new)]) == 1
        out = capsys.readouterr().out
        assert ("DIFFERS in error" if name == "metric" else "DIFFERS in arrays.a") in out, out
