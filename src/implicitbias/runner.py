"""Run a set of configs of one experiment through the store: skip complete runs, save new ones.

A stored run is complete only if it loads (:meth:`Store.damage`); a damaged one is moved aside
(kept) and recomputed. Before each computation the store is checked to be writable, so a full or
read-only disk fails with :class:`~implicitbias.store.StoreError` before any time is spent.

Generic over experiments: it only uses ``experiment.NAME`` and ``experiment.run`` (the
:class:`~implicitbias.experiments.Experiment` protocol; no import of the registry).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .store import Store


@dataclass(frozen=True)
class Outcome:
    preset: str
    path: Path
    skipped: bool  # a complete run (one that loads) was already stored
    wall_seconds: float


def run_all(
    experiment,
    configs: dict[str, object],
    store: Store,
    *,
    force: bool = False,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run each ``preset -> config`` in order; completed runs are saved before the next starts,
    so an interruption loses at most the run in progress. Raises
    :class:`~implicitbias.store.StoreError` before computing a run the store cannot take."""
    outcomes = []
    for preset, config in configs.items():
        if on_start:
            on_start(preset)
        path = store.run_dir(experiment.NAME, config)
        damage = store.damage(path) if not force and path.is_dir() else None
        if not force and path.is_dir() and damage is None:
            out = Outcome(preset, path, True, 0.0)
        else:
            store.check_writable(experiment.NAME)
            if damage is not None:
                store.set_aside(path, damage)
            start = time.perf_counter()
            record = experiment.run(config)
            wall = time.perf_counter() - start
            # without --force, a run another process stored meanwhile is kept (same config, same numbers)
            path = store.save(experiment.NAME, config, record, preset=preset, wall_seconds=wall, replace=force)
            out = Outcome(preset, path, False, wall)
        outcomes.append(out)
        if on_done:
            on_done(out)
    return outcomes
