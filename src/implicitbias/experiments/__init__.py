"""The experiment registry and the :class:`Experiment` protocol.

An experiment is a module with ``NAME``, ``Config`` (a frozen dataclass validated in
``__post_init__``), ``PRESETS`` (name -> Config) and ``run(config) -> Record``; optionally
``footprint_bytes(config) -> int`` and ``footprint_terms(config) -> dict[str, int]``, a lower bound of
the memory a run holds and its largest arrays by name, which the CLI checks before computing
(:func:`implicitbias.runtime.footprint.check`; each estimate lives beside its task). An experiment
module holds presets and ``run`` only: the science is in :mod:`implicitbias.tasks` and the packages
beside it, and another experiment is read only through its ``PRESETS``. Adding one = a module
here + one entry in ``EXPERIMENTS`` (and, for a report section of its own, a module in
:mod:`implicitbias.report`); the CLI, runner and store need no change. Experiment modules never
import the store, the report or matplotlib.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..record import Record
from . import chains, defense, dynamics, equations, gc_vs_gd, knockout, poison_synthetic, realworld, table1


@runtime_checkable
class Experiment(Protocol):
    NAME: str
    Config: type
    PRESETS: dict[str, Any]

    def run(self, config: Any) -> Record: ...


EXPERIMENTS: dict[str, Experiment] = {m.NAME: m for m in (table1, dynamics, chains, realworld, gc_vs_gd, defense,
                                                          poison_synthetic, knockout, equations)}


def get(name: str) -> Experiment:
    """The registered experiment ``name``; ``ValueError`` listing the known ones otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]
