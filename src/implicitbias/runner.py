"""Run a set of configs of one experiment through the store: skip complete runs, save new ones.

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
    skipped: bool  # a complete run was already stored
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
    so an interruption loses at most the run in progress."""
    outcomes = []
    for preset, config in configs.items():
        if on_start:
            on_start(preset)
        if not force and store.is_complete(experiment.NAME, config):
            out = Outcome(preset, store.run_dir(experiment.NAME, config), True, 0.0)
        else:
            start = time.perf_counter()
            record = experiment.run(config)
            wall = time.perf_counter() - start
            path = store.save(experiment.NAME, config, record, preset=preset, wall_seconds=wall)
            out = Outcome(preset, path, False, wall)
        outcomes.append(out)
        if on_done:
            on_done(out)
    return outcomes
