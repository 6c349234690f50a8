"""Target groups with the loss-based allocation of poisons (docs/science.md §4), for classification.

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

:func:`allocate_top_groups` is the authors' rule (docs/findings/realworld-authors.md; their
``forest/witchcoven/witch_base.py``,
``_reorder_targets_by_loss``, ``_setup_loss_based_target_splitting``, ``_compute_focused_target_gradients``
and ``_setup_loss_based_poison_allocation``): the ``n_high`` correctly classified targets of highest
loss (all correct ones if fewer) in decreasing loss order, then the rest (the other correct ones by
decreasing loss, then the misclassified ones by decreasing loss); each side cut into consecutive
groups of ``group_size`` targets (their ``targets_per_group``; 0 = one group per side);
``int(n_poisons * high_frac)`` poisons split evenly among the high groups (the first groups one more
when it does not divide), the others among the rest. A group left without poisons is dropped (their
loop never visits it). With ``n_high >= `` the number of targets, or no correctly classified
target, all targets form one group with every poison (their "Invalid target split").

:func:`craft_groups` with ``joint_restarts=True`` is their restart loop (``_brew``): every restart
brews all groups, its score is the poison-weighted mean of the groups' scores (their per-batch loss,
weighted by group size, averaged over poison batches), and one restart is kept for all groups.
Ours (default) keeps the best restart per group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from dataclasses import replace

from .matching import BrewConfig, BrewResult, LossFn, craft_poisons, target_direction
from ..core.train import PyTree



class TargetGroup(NamedTuple):
    name: str
    targets: np.ndarray  # indices into the target set
    poisons: np.ndarray  # indices into the poison pool


def per_example_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-log softmax(logits)[label]`` per example: ``(N, K), (N,) -> (N,)``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None].astype(int), axis=-1)[:, 0]


def target_stats(model: PyTree, x_target, y_target,
                 predict_fn: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-target cross-entropy and correctness of ``model`` (``predict_fn(model, x) -> logits (N, K)``,
    default ``model(x)``)."""
    logits = model(x_target) if predict_fn is None else predict_fn(model, x_target)
    loss = per_example_cross_entropy(logits, jnp.asarray(y_target))
    correct = jnp.argmax(logits, axis=-1) == jnp.asarray(y_target)
    return np.asarray(loss), np.asarray(correct)


def _checked_targets(losses, correct, n_poisons: int) -> tuple[np.ndarray, np.ndarray]:
    """``losses`` (float) and ``correct`` (bool) as 1-d arrays of equal length; ``n_poisons >= 1``."""
    losses = np.asarray(losses, float)
    correct = np.asarray(correct, bool)
    if losses.shape != correct.shape or losses.ndim != 1:
        raise ValueError(f"losses and correct must be 1-d of equal length, got {losses.shape} and {correct.shape}")
    if n_poisons < 1:
        raise ValueError(f"n_poisons must be >= 1, got {n_poisons}")
    return losses, correct


def allocate_groups(losses, correct, n_poisons: int, seed: int = 0, n_groups: int = 2,
                    high_quantile: float = 0.5) -> list[TargetGroup]:
    """Split targets into groups and poisons among them (module docstring)."""
    losses, correct = _checked_targets(losses, correct, n_poisons)
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
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


def allocate_top_groups(losses, correct, n_poisons: int, seed: int = 0, n_high: int = 1000, group_size: int = 50,
                        high_frac: float = 0.5) -> list[TargetGroup]:
    """The authors' split of targets and poisons into groups (module docstring)."""
    losses, correct = _checked_targets(losses, correct, n_poisons)
    if n_high < 1:
        raise ValueError(f"n_high must be >= 1, got {n_high}")
    if group_size < 0:
        raise ValueError(f"group_size must be >= 0, got {group_size}")
    if not 0.0 <= high_frac <= 1.0:
        raise ValueError(f"high_frac must be in [0, 1], got {high_frac}")
    perm = np.random.default_rng(seed).permutation(n_poisons)
    idx = np.arange(losses.size)
    by_loss = lambda sel: sel[np.argsort(-losses[sel], kind="stable")]
    ok, bad = by_loss(idx[correct]), by_loss(idx[~correct])
    high, rest = ok[:n_high], np.concatenate([ok[n_high:], bad])
    if n_high >= losses.size or high.size == 0 or rest.size == 0:  # their "Invalid target split": one group
        return [TargetGroup("all", idx, np.sort(perm))]

    def chunks(t):
        size = group_size or t.size
        return [t[i : i + size] for i in range(0, t.size, size)]

    def spread(p, n):
        per, extra = divmod(p.size, n)
        cuts = np.cumsum([0] + [per + (1 if k < extra else 0) for k in range(n)])
        return [p[cuts[k] : cuts[k + 1]] for k in range(n)]

    n_hp = int(n_poisons * high_frac)
    groups = []
    for side, targets, pois in (("high", chunks(high), perm[:n_hp]), ("low", chunks(rest), perm[n_hp:])):
        for k, (t, p) in enumerate(zip(targets, spread(pois, len(targets)))):
            if p.size:
                groups.append(TargetGroup(f"{side}_{k}", t, np.sort(p)))
    return groups


class GroupBrew(NamedTuple):
    delta: jax.Array  # (n_pool, ...) perturbation of the whole pool (zero where a row is no poison)
    poison_idx: np.ndarray  # pool rows that carry a perturbation (all groups, sorted)
    results: list[BrewResult]  # one per group, in the order of ``groups``
    restart_scores: np.ndarray | None = None  # joint_restarts: the poison-weighted score of every restart


@eqx.filter_jit
def masked_direction(model: PyTree, x_target: jax.Array, y_target: jax.Array, w: jax.Array) -> PyTree:
    """``-grad_theta`` of the mean cross-entropy of a classifier (``vmap(model)(x_target) -> logits``)
    over the targets with ``w = 1`` (``w``: 0/1 per target).

    Equal to the untargeted :func:`target_direction` on ``x_target[w == 1]``; the targets keep a fixed
    size, so every group and seed shares one compilation."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def f(p):
        logits = jax.vmap(eqx.combine(p, static))(x_target)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_target)
        return jnp.sum(ce * w) / jnp.sum(w)

    return jax.tree_util.tree_map(jnp.negative, jax.grad(f)(params))


def classifier_direction(model: PyTree, x_target, y_target, targets: np.ndarray) -> PyTree:
    """The untargeted direction of the ``targets`` rows of a classifier's target set, through the
    compiled :func:`masked_direction` (a ``direction_fn`` for :func:`craft_groups`)."""
    w = np.zeros(np.shape(x_target)[0], np.float32)
    w[targets] = 1.0
    return masked_direction(model, jnp.asarray(x_target), jnp.asarray(y_target), jnp.asarray(w))


def craft_groups(model: PyTree, loss_fn: LossFn, x_pool, y_pool, x_target, y_target, groups: list[TargetGroup],
                 key: jax.Array, cfg: BrewConfig, mode: str = "untargeted", label_fn: Callable | None = None,
                 direction_fn: Callable | None = None, joint_restarts: bool = False) -> GroupBrew:
    """Match each group separately: its targets' direction, its poisons; return the pool's perturbation.

    ``direction_fn(model, x_target, y_target, targets) -> direction`` replaces :func:`target_direction` on the
    group's rows (e.g. :func:`classifier_direction`; ``mode`` then does not apply). ``joint_restarts``: one
    restart for all groups (module docstring); restart ``r`` of group ``g`` uses ``fold_in(k_g, r)``."""
    x_pool = jnp.asarray(x_pool)
    dm = model
    keys = jax.random.split(key, len(groups))
    directions = []
    for g in groups:
        if direction_fn is None:
            directions.append(
                target_direction(loss_fn, dm, jnp.asarray(x_target)[g.targets], jnp.asarray(y_target)[g.targets], mode)
            )
        else:
            directions.append(direction_fn(dm, x_target, y_target, g.targets))
    poison_idx = np.sort(np.concatenate([g.poisons for g in groups]))

    def brew(k, c):
        delta = jnp.zeros_like(x_pool)
        results = []
        for g, d, kg in zip(groups, directions, keys):
            res = craft_poisons(model, loss_fn, x_pool[g.poisons], jnp.asarray(y_pool)[g.poisons], d,
                                kg if k is None else jax.random.fold_in(kg, k), c, label_fn)
            delta = delta.at[g.poisons].set(res.delta)
            results.append(res)
        return delta, results

    if not joint_restarts:
        delta, results = brew(None, cfg)
        return GroupBrew(delta, poison_idx, results)
    one = replace(cfg, restarts=1)
    sizes = np.array([g.poisons.size for g in groups], float)
    best, scores = None, []
    for r in range(cfg.restarts):
        delta, results = brew(r, one)
        score = float(np.dot(sizes, [float(res.restart_objectives[0]) for res in results]) / sizes.sum())
        scores.append(score if np.isfinite(score) else np.inf)
        if best is None or scores[-1] < best[0]:
            best = (scores[-1], delta, results)
    return GroupBrew(best[1], poison_idx, best[2], np.asarray(scores))
