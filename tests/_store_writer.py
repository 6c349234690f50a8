"""A writer process for tests/test_store_robustness.py: saves one run many times, in step with another
writer (both start at a barrier). Light to import (the store only), as spawned processes import it."""

from dataclasses import dataclass

import numpy as np

from implicitbias.record import Record
from implicitbias.runtime.store import Store


@dataclass(frozen=True)
class Config:
    seeds: tuple = (0,)
    lr: float = 0.1


CONFIG = Config()


def save_many(root, barrier, n, who, errors):
    """``n`` saves of ``CONFIG`` under ``root``, alternating ``replace``; failures are put on ``errors``."""
    store = Store(root)
    rec = Record({"writer": who}, {"x": np.arange(100.0)})
    barrier.wait()
    for i in range(n):
        try:
            store.save("store_writer", CONFIG, rec, preset="p", wall_seconds=0.0, replace=bool((i + who) % 3))
        except Exception as e:  # reported to the test, which fails on any
            errors.put(f"writer {who}, save {i}: {type(e).__name__}: {e}")
