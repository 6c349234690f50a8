"""``scripts/pool_realworld.py``: pools only runs that differ in their seeds alone, and refuses to pool
discovery with replication seeds or runs made under other library versions (stored records with known
numbers; no training)."""

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from implicitbias.experiments import realworld as rw
from implicitbias.record import Record
from implicitbias.runtime.store import Store, library_versions

PRESET = "s4d/digits/mean"
SCRIPT = Path(__file__).parents[1] / "scripts" / "pool_realworld.py"
spec = importlib.util.spec_from_file_location("pool_realworld", SCRIPT)
pool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pool)


def _save(store, seeds, acc_clean, acc_poisoned, versions=None):
    cfg = replace(rw.PRESETS[PRESET], seeds=tuple(seeds))
    metrics = {"seeds": list(seeds), **{f"{v}_test_acc": list(acc_clean) for v in rw.VARIANTS},
               "poisoned_test_acc": list(acc_poisoned)}
    where = None if versions is None else {"versions": versions, "platform": "test"}
    store.save(rw.NAME, cfg, Record(metrics, {}), preset=PRESET, wall_seconds=1.0, where=where)


def test_replications_pool_into_one_interval(tmp_path, capsys):
    store = Store(tmp_path)
    _save(store, (5, 6, 7), [0.9, 0.8, 0.9], [0.8, 0.8, 0.7])  # poisoned - clean error: 0.1, 0, 0.2
    _save(store, (8, 9), [0.9, 0.9], [0.6, 0.9])  # 0.3, 0
    pool.main([PRESET, "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "2 replication runs, seeds [5, 6, 7, 8, 9]" in out
    d = np.array([0.1, 0.0, 0.2, 0.3, 0.0])
    half = 2.7764451051977987 * d.std(ddof=1) / np.sqrt(5)  # t_{0.975, 4} (scipy.stats.t.ppf)
    # printed to 2 decimals of points: the float64 computation is ~1e-15 from this closed form
    assert f"poisoned - clean    test error: {100 * d.mean():+.2f} ± {100 * half:.2f} points (95% t, n=5)" in out


def test_discovery_and_replication_are_not_pooled(tmp_path):
    store = Store(tmp_path)
    _save(store, rw.PRESETS[PRESET].seeds, [0.9] * 5, [0.8] * 5)
    _save(store, (5, 6), [0.9] * 2, [0.8] * 2)
    with pytest.raises(SystemExit, match="mix roles.*discovery.*replication|mix roles.*replication.*discovery"):
        pool.main([PRESET, "--runs-dir", str(tmp_path)])


def test_other_library_versions_are_not_pooled(tmp_path):
    store = Store(tmp_path)
    _save(store, (5, 6), [0.9] * 2, [0.8] * 2)
    _save(store, (7, 8), [0.9] * 2, [0.8] * 2, versions={**library_versions(), "jax": "0.0.1"})
    with pytest.raises(SystemExit, match="different library versions"):
        pool.main([PRESET, "--runs-dir", str(tmp_path)])
