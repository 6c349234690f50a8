"""Progress from inside long computations, for whoever listens (the CLI's progress bar).

Compiled loops report between segments run from Python (``train.train_batched`` runs its loop in
segments only while someone listens), not by host callbacks inside the compiled program: XLA does
not store executables with host callbacks in the persistent compile cache, and the loop's numbers
do not depend on how it is segmented (tested).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainProgress:
    """One report of a batched training loop (``train.train_batched``).

    ``updates``: the most updates any run has taken; ``running`` of ``runs`` still train;
    ``fitted``: runs that have reached eps; ``remaining``: updates still to go when every running
    run has reached eps (then the end is known: eps + extra updates), else ``None``; ``max_steps``:
    the bound; ``seconds``: since the loop started.
    """

    updates: int
    running: int
    runs: int
    fitted: int
    remaining: int | None
    max_steps: int
    seconds: float

    @property
    def rate(self) -> float:
        """Updates per second of the slowest-to-finish run so far."""
        return self.updates / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds to the end when it is known (every running run has fitted), else ``None``."""
        if self.remaining is None or self.rate <= 0:
            return None
        return self.remaining / self.rate

    def describe(self) -> str:
        """One line: ``updates 12,300 (max 1,000,000) · 3/4 training, 1 fitted · 52,000 updates/s · ETA 12 s``."""
        eta = self.eta_seconds
        text = (f"updates {self.updates:,} (max {self.max_steps:,}) · {self.running}/{self.runs} training, "
                f"{self.fitted} fitted · {self.rate:,.0f} updates/s")
        return text + (f" · ETA {eta:,.0f} s" if eta is not None else "")


def rate_and_eta(done: int, total: int, seconds: float) -> str:
    """``"1.2 steps/s · ETA 340 s"`` for ``done`` of ``total`` steps in ``seconds`` (ETA ``nan`` before a rate)."""
    rate = done / seconds if seconds > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("nan")
    return f"{rate:.2f} steps/s · ETA {eta:,.0f} s"


_listeners: list[Callable[[object], None]] = []


@contextlib.contextmanager
def listening(fn: Callable[[object], None]) -> Iterator[None]:
    """Call ``fn(report)`` with every progress report made while the block runs."""
    _listeners.append(fn)
    try:
        yield
    finally:
        _listeners.remove(fn)


def listened() -> bool:
    """Whether anyone listens (loops that can run in one piece do so when nobody does)."""
    return bool(_listeners)


def report(item) -> None:
    """Hand ``item`` (e.g. a :class:`TrainProgress`) to every listener."""
    for fn in list(_listeners):
        fn(item)
