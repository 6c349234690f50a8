"""The poisoned training set (docs/science.md §4): clean + perturbed copy ("duplicate") or replacing ("replace").

Poisons keep their labels (classification), or, when a ``label_fn`` is given, get the clean label
of their *perturbed* input (teacher-student regression: ``y = teacher(x + delta)``). Either way the
labels are correct for the inputs the victim sees: clean-label poisoning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import jax.numpy as jnp
import numpy as np

MODES = ("duplicate", "replace")


class PoisonedSet(NamedTuple):
    x: jnp.ndarray
    y: jnp.ndarray
    is_poison: np.ndarray  # bool per row: the row carries a perturbation


def assemble(x_train, y_train, poison_idx, delta, mode: Literal["duplicate", "replace"] = "duplicate",
             label_fn: Callable | None = None) -> PoisonedSet:
    """Build the training set the victim is retrained on.

    ``poison_idx: (P,)`` rows of ``x_train`` that are poisoned, ``delta: (P, ...)`` their perturbations.
    ``'duplicate'``: all clean rows unchanged, then the ``P`` perturbed copies appended (``N + P`` rows).
    ``'replace'``: the ``P`` rows are perturbed in place (``N`` rows).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    x_train, y_train = jnp.asarray(x_train), jnp.asarray(y_train)
    poison_idx = np.asarray(poison_idx, int)
    delta = jnp.asarray(delta)
    if delta.shape != (poison_idx.size,) + x_train.shape[1:]:
        raise ValueError(f"delta has shape {delta.shape}, expected {(poison_idx.size,) + x_train.shape[1:]}")
    if np.unique(poison_idx).size != poison_idx.size:
        raise ValueError("poison_idx contains duplicates")
    xp = x_train[poison_idx] + delta
    yp = y_train[poison_idx] if label_fn is None else jnp.asarray(label_fn(xp)).astype(y_train.dtype)
    n = x_train.shape[0]
    if mode == "duplicate":
        x = jnp.concatenate([x_train, xp])
        y = jnp.concatenate([y_train, yp])
        mask = np.concatenate([np.zeros(n, bool), np.ones(poison_idx.size, bool)])
    else:
        x = x_train.at[poison_idx].set(xp)
        y = y_train.at[poison_idx].set(yp)
        mask = np.zeros(n, bool)
        mask[poison_idx] = True
    return PoisonedSet(x, y, mask)
