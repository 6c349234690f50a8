"""Run a set of configs of one experiment through the store: skip complete runs, save new ones.

A stored run is complete only if it loads (:meth:`Store.damage`); a damaged one is moved aside
(kept) and recomputed. Before computing, the store is checked to be writable (before each run on
the local backend), so a full or read-only disk fails with :class:`~implicitbias.runtime.store.StoreError`
before any time is spent.

The store is the single source of truth for what is done: complete runs are skipped before the
rest go to a backend (:mod:`implicitbias.runtime.backends`: in-process by default, or Ray), and every
record that comes back is written here, atomically, as soon as it arrives.

Generic over experiments: it only uses ``experiment.NAME`` and ``experiment.run`` (the
:class:`~implicitbias.experiments.Experiment` protocol; no import of the registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .backends import Failed, Finished, LocalBackend, Started
from .store import Store


@dataclass(frozen=True)
class Outcome:
    preset: str
    path: Path
    skipped: bool  # a complete run (one that loads) was already stored
    wall_seconds: float
    error: str | None = None  # the run failed on every attempt (nothing stored); one line
    attempts: int = 1


def run_all(
    experiment,
    configs: dict[str, object],
    store: Store,
    *,
    force: bool = False,
    backend=None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[Outcome], None] | None = None,
    on_retry: Callable[[Failed], None] | None = None,
) -> list[Outcome]:
    """Run each ``preset -> config`` not stored yet on ``backend`` (default: in this process, in
    order) and save each record as it arrives, so an interruption loses at most the runs in
    progress. Returns the outcomes in the order of ``configs``; a run that failed on every attempt
    has ``error`` set (only a backend that retries reports failures; in-process the exception is
    raised). Raises :class:`~implicitbias.runtime.store.StoreError` before computing a run the store cannot
    take. On ``KeyboardInterrupt`` the runs that finished meanwhile are stored, then it is re-raised."""
    backend = backend if backend is not None else LocalBackend()
    outcomes: dict[str, Outcome] = {}
    todo: dict[str, object] = {}
    twins: dict[str, list[str]] = {}  # the same config under two names is computed once
    first_of: dict[Path, str] = {}

    def finish(out: Outcome) -> None:
        outcomes[out.preset] = out
        if on_done:
            on_done(out)

    for preset, config in configs.items():
        path = store.run_dir(experiment.NAME, config)
        if path in first_of:
            twins.setdefault(first_of[path], []).append(preset)
            continue
        first_of[path] = preset
        damage = store.damage(path) if not force and path.is_dir() else None
        if not force and path.is_dir() and damage is None:
            finish(Outcome(preset, path, True, 0.0))
            continue
        if damage is not None:
            store.check_writable(experiment.NAME)
            store.set_aside(path, damage)
        todo[preset] = config
    if todo and not isinstance(backend, LocalBackend):
        store.check_writable(experiment.NAME)

    def save(event: Finished) -> None:
        where = event.where or {}
        # without --force, a run another process stored meanwhile is kept (same config, same numbers)
        path = store.save(experiment.NAME, todo[event.key], event.record, preset=event.key,
                          wall_seconds=event.wall_seconds, replace=force, where=where or None)
        finish(Outcome(event.key, path, False, event.wall_seconds, attempts=attempts.get(event.key, 1)))
        for twin in twins.get(event.key, ()):
            finish(Outcome(twin, path, True, 0.0))

    attempts: dict[str, int] = {}
    saving: Finished | None = None
    try:
        for event in backend.map(experiment.run, todo):
            if isinstance(event, Started):
                store.check_writable(experiment.NAME)
                if on_start:
                    on_start(event.key)
            elif isinstance(event, Failed):
                attempts[event.key] = event.attempt + 1
                if event.final:
                    path = store.run_dir(experiment.NAME, todo[event.key])
                    finish(Outcome(event.key, path, False, 0.0, error=event.error, attempts=event.attempt))
                    for twin in twins.get(event.key, ()):
                        finish(Outcome(twin, path, False, 0.0, error=event.error, attempts=event.attempt))
                elif on_retry:
                    on_retry(event)
            else:
                saving = event
                save(event)
                saving = None
    except KeyboardInterrupt:
        # keep every finished run: the one being written when the interrupt came (written again,
        # atomically), and those the backend finished but had not handed over yet
        for event in ([saving] if saving is not None else []) + backend.salvage():
            save(event)
        raise
    return [outcomes[p] for p in configs if p in outcomes]
