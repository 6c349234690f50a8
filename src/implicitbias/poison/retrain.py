"""Retraining from the same initialisation until the poisoned model fits as well as the clean one (docs/science.md §4).

The training procedure is abstract: ``train_fn(model, x, y, key) -> (model, history)``. Wrap the
library's trainers with :func:`functools.partial`, e.g.
``partial(train_classifier, cfg=cfg)`` -- keyword arguments so the positional order stays
``(model, x, y, key)``. ``continue_fn`` (same signature, default ``train_fn``) is what an extra
round runs on the current model when the poisoned model does not yet fit its data as well as the
clean model did; ``max_rounds`` caps the extra rounds (the "cap on extra epochs").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from ..core.train import PyTree

TrainFn = Callable[[PyTree, Any, Any, jax.Array], tuple[PyTree, Any]]


class TrainOutcome(NamedTuple):
    model: PyTree
    train_loss: float  # loss_fn(model, x, y) on the set it was trained on
    rounds: int  # extra rounds taken after the first training (0 for a clean run)
    fits: bool  # train_loss <= target (always True without a target)
    histories: list  # the history returned by every call


def retrain(init_model: PyTree, x, y, train_fn: TrainFn, key: jax.Array, loss_fn: Callable,
            target_loss: float | None = None, continue_fn: TrainFn | None = None,
            max_rounds: int = 3) -> TrainOutcome:
    """Train ``init_model`` on ``(x, y)``; while ``loss > target_loss`` run up to ``max_rounds`` extra
    rounds of ``continue_fn`` on the current model (keys folded from ``key``)."""
    if max_rounds < 0:
        raise ValueError(f"max_rounds must be >= 0, got {max_rounds}")
    model, hist = train_fn(init_model, x, y, key)
    histories = [hist]
    loss = float(loss_fn(model, x, y))
    rounds = 0
    more = continue_fn or train_fn
    while target_loss is not None and not loss <= target_loss and rounds < max_rounds:
        rounds += 1
        model, hist = more(model, x, y, jax.random.fold_in(key, rounds))
        histories.append(hist)
        loss = float(loss_fn(model, x, y))
    fits = target_loss is None or loss <= target_loss
    return TrainOutcome(model, loss, rounds, bool(fits), histories)
