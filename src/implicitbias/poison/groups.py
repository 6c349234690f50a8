"""Target groups with the loss-based allocation of poisons (SPEC §4), for classification.

The targets are split into groups, each matched separately (its own target direction, its own
poisons):

* group 0, ``"correct_high_loss"``: targets that the clean model classifies **correctly** and whose
  loss is at or above the ``high_quantile`` quantile of the correct targets' losses (default: the
  upper half). They sit closest to the decision boundary, so they are the cheapest to flip; they get
  **half** of the poisons (``n_poisons // 2``).
* groups 1..``n_groups-1``, ``"rest_k"``: all other targets (misclassified ones and correct low-loss
  ones), ordered by decreasing loss and cut into ``n_groups - 1`` consecutive chunks of nearly equal
  size; they split the remaining poisons equally (the first groups get one more when it does not
  divide).

Degenerate cases: with ``n_groups == 1``, or when either side is empty, all targets form one group
that gets all poisons. Poisons are assigned by a seeded random permutation of ``range(n_poisons)``,
so the indices refer to the caller's pool of candidate poisons.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .matching import BrewConfig, BrewResult, LossFn, craft_poisons, target_direction

PyTree = Any


class TargetGroup(NamedTuple):
    name: str
    targets: np.ndarray  # indices into the target set
    poisons: np.ndarray  # indices into the poison pool


def per_example_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-log softmax(logits)[label]`` per example: ``(N, K), (N,) -> (N,)``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None].astype(int), axis=-1)[:, 0]


def target_stats(model: PyTree, x_t, y_t, predict_fn: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-target cross-entropy and correctness of ``model`` (``predict_fn(model, x) -> logits (N, K)``,
    default ``model(x)``)."""
    logits = model(x_t) if predict_fn is None else predict_fn(model, x_t)
    loss = per_example_cross_entropy(logits, jnp.asarray(y_t))
    correct = jnp.argmax(logits, axis=-1) == jnp.asarray(y_t)
    return np.asarray(loss), np.asarray(correct)


def allocate_groups(losses, correct, n_poisons: int, seed: int = 0, n_groups: int = 2,
                    high_quantile: float = 0.5) -> list[TargetGroup]:
    """Split targets into groups and poisons among them (module docstring)."""
    losses = np.asarray(losses, float)
    correct = np.asarray(correct, bool)
    if losses.shape != correct.shape or losses.ndim != 1:
        raise ValueError(f"losses and correct must be 1-d of equal length, got {losses.shape} and {correct.shape}")
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    if n_poisons < 1:
        raise ValueError(f"n_poisons must be >= 1, got {n_poisons}")
    if not 0.0 <= high_quantile < 1.0:
        raise ValueError(f"high_quantile must be in [0, 1), got {high_quantile}")
    perm = np.random.default_rng(seed).permutation(n_poisons)
    idx = np.arange(losses.size)
    if correct.any():
        thr = np.quantile(losses[correct], high_quantile)
        high = idx[correct & (losses >= thr)]
    else:
        high = idx[:0]
    rest = np.setdiff1d(idx, high)
    if n_groups == 1 or high.size == 0 or rest.size == 0 or n_poisons < 2:
        return [TargetGroup("all", idx, np.sort(perm))]
    n_rest_groups = min(n_groups - 1, rest.size, n_poisons - n_poisons // 2)
    groups = [TargetGroup("correct_high_loss", high, np.sort(perm[: n_poisons // 2]))]
    rest = rest[np.argsort(-losses[rest], kind="stable")]
    rest_poisons = perm[n_poisons // 2:]
    for k, (t, p) in enumerate(zip(np.array_split(rest, n_rest_groups), np.array_split(rest_poisons, n_rest_groups))):
        groups.append(TargetGroup(f"rest_{k}", t, np.sort(p)))
    return groups


class GroupBrew(NamedTuple):
    delta: jax.Array  # (n_pool, ...) perturbation of the whole pool (zero where a row is no poison)
    poison_idx: np.ndarray  # pool rows that carry a perturbation (all groups, sorted)
    results: list[BrewResult]  # one per group, in the order of ``groups``


@eqx.filter_jit
def masked_direction(model: PyTree, x_t: jax.Array, y_t: jax.Array, w: jax.Array) -> PyTree:
    """``-grad_theta`` of the mean cross-entropy of a classifier (``vmap(model)(x_t) -> logits``)
    over the targets with ``w = 1`` (``w``: 0/1 per target).

    Equal to the untargeted :func:`target_direction` on ``x_t[w == 1]``; the targets keep a fixed
    size, so every group and seed shares one compilation."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def f(p):
        logits = jax.vmap(eqx.combine(p, static))(x_t)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_t)
        return jnp.sum(ce * w) / jnp.sum(w)

    return jax.tree_util.tree_map(jnp.negative, jax.grad(f)(params))


def classifier_direction(model: PyTree, x_t, y_t, targets: np.ndarray) -> PyTree:
    """The untargeted direction of the ``targets`` rows of a classifier's target set, through the
    compiled :func:`masked_direction` (a ``direction_fn`` for :func:`craft_groups`)."""
    w = np.zeros(np.shape(x_t)[0], np.float32)
    w[targets] = 1.0
    return masked_direction(model, jnp.asarray(x_t), jnp.asarray(y_t), jnp.asarray(w))


def craft_groups(model: PyTree, loss_fn: LossFn, x_pool, y_pool, x_t, y_t, groups: list[TargetGroup],
                 key: jax.Array, cfg: BrewConfig, mode: str = "untargeted", label_fn: Callable | None = None,
                 direction_fn: Callable | None = None) -> GroupBrew:
    """Match each group separately: its targets' direction, its poisons; return the pool's perturbation.

    ``direction_fn(model, x_t, y_t, targets) -> direction`` replaces :func:`target_direction` on the
    group's rows (e.g. :func:`classifier_direction`; ``mode`` then does not apply)."""
    x_pool = jnp.asarray(x_pool)
    delta = jnp.zeros_like(x_pool)
    results = []
    for g, k in zip(groups, jax.random.split(key, len(groups))):
        if direction_fn is None:
            direction = target_direction(loss_fn, model, jnp.asarray(x_t)[g.targets], jnp.asarray(y_t)[g.targets], mode)
        else:
            direction = direction_fn(model, x_t, y_t, g.targets)
        res = craft_poisons(model, loss_fn, x_pool[g.poisons], jnp.asarray(y_pool)[g.poisons], direction, k, cfg,
                            label_fn)
        delta = delta.at[g.poisons].set(res.delta)
        results.append(res)
    poison_idx = np.sort(np.concatenate([g.poisons for g in groups]))
    return GroupBrew(delta, poison_idx, results)
