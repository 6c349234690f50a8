"""Gradient matching ("Witches' Brew", Geiping et al. 2021), generic over an Equinox model (docs/science.md §4).

Conventions
-----------
* ``loss_fn(model, x, y) -> scalar`` is the *per-batch* training loss (a mean over the batch), the
  same one the victim is trained with. ``x`` has the batch on axis 0 and time on axis 1
  (``(N, L)`` or ``(N, L, C)``).
* The trainable parameters ``theta`` are the leaves of ``eqx.partition(model, filter_spec)[0]``
  (default: every inexact array). Inner products are over **all of them flattened together**:
  ``<a, b> = sum_leaves Re(vdot(a_leaf, b_leaf))``, ``||a|| = sqrt(<a, a>)``.

The objective (exact formula and signs)
---------------------------------------
Target direction ``D`` (:func:`target_direction`):

* untargeted (docs/science.md §4, "push targets away from their true labels"):
  ``g_t = grad_theta loss_fn(model, x_target, y_true)`` and ``D = -g_t``;
* targeted: ``g_adv = grad_theta loss_fn(model, x_target, y_adv)`` and ``D = +g_adv``.

Poison gradient ``g_p(delta) = grad_theta loss_fn(model, x_p + delta, y_p(delta))`` with
``y_p(delta) = y_p`` (classification: poisons keep their labels) or, when a ``label_fn`` is given,
``y_p(delta) = label_fn(x_p + delta)`` (clean labels recomputed for the perturbed input, as in the
teacher-student regression of :mod:`implicitbias.poison.synthetic`).

Matching loss ``M(delta) = 1 - <g_p(delta), D> / (||g_p(delta)|| ||D||)`` in ``[0, 2]``.
Training on the poisons moves ``theta`` along ``-g_p``; ``M = 0`` means that step is a step along
``-D``, i.e. *ascent* of the targets' true-label loss (untargeted) or descent of their
adversarial-label loss (targeted).

End-of-sequence penalty ``R(delta) = penalty * (1/P) sum_n sum_i w_i ||delta_{n,i} / eps||^2`` over
poisons ``n = 1..P`` and time positions ``i = 0..L-1`` (the norm sums over feature channels), with
``w_i = (1 - i/(L-1))^power`` (:func:`end_penalty_weights`): 1 at the first position, 0 at the last,
so energy is cheap at the end and expensive at the start. Dividing by ``eps`` makes ``penalty``
independent of the budget's units: a perturbation at the full budget on every position costs
``penalty * sum_i w_i * C``.

:func:`craft_poisons` minimises ``M(delta) + R(delta)`` over the box
``||delta||_inf <= eps`` (optionally intersected with a data range ``clip_min <= x_p + delta <= clip_max``)
by **sign-Adam** (Adam fed with ``sign(grad)``, as in the authors' toolkit), the step size
``lr * eps`` divided by 10 at 3/8, 5/8 and 7/8 of the iterations, a projection onto the box after
every step, and ``restarts`` independent random starts of which the one with the lowest final
objective is kept. The gradient w.r.t. ``delta`` goes through ``g_p`` (second order through the
model) by JAX autodiff. The loops are ``lax.scan`` (iterations) and ``lax.map`` (restarts) inside
one ``eqx.filter_jit``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ..core.train import PyTree

LossFn = Callable[[PyTree, jax.Array, jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------
# gradients and the cosine over all parameters
# --------------------------------------------------------------------------------------------

def param_grad(loss_fn: LossFn, model: PyTree, x: jax.Array, y: jax.Array,
               filter_spec=eqx.is_inexact_array, key: jax.Array | None = None) -> PyTree:
    """``grad_theta loss_fn(model, x, y)`` over the leaves selected by ``filter_spec`` (others ``None``);
    with ``key``, ``loss_fn(model, x, y, key)`` (a stochastic loss: augmentation, dropout)."""
    params, static = eqx.partition(model, filter_spec)
    if key is None:
        return jax.grad(lambda p: loss_fn(eqx.combine(p, static), x, y))(params)
    return jax.grad(lambda p: loss_fn(eqx.combine(p, static), x, y, key))(params)


def tree_dot(a: PyTree, b: PyTree) -> jax.Array:
    """``sum_leaves Re(vdot(a, b))``: the Euclidean inner product of all leaves flattened together."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(la) != len(lb):
        raise ValueError(f"trees have {len(la)} and {len(lb)} leaves")
    return sum(jnp.real(jnp.vdot(x, y)) for x, y in zip(la, lb))


def tree_cosine(a: PyTree, b: PyTree) -> jax.Array:
    """Cosine of the angle between two parameter trees, all leaves flattened together.

    A tiny constant under the square roots keeps the value and its gradient finite at zero.
    """
    tiny = 1e-30
    return tree_dot(a, b) / (jnp.sqrt(tree_dot(a, a) + tiny) * jnp.sqrt(tree_dot(b, b) + tiny))


def target_direction(loss_fn: LossFn, model: PyTree, x_target: jax.Array, y_target: jax.Array,
                     mode: Literal["untargeted", "targeted"] = "untargeted",
                     filter_spec=eqx.is_inexact_array) -> PyTree:
    """The direction ``D`` the poison gradient must align with.

    ``mode='untargeted'``: ``y_target`` are the targets' true labels and ``D = -grad loss(x_target, y_target)``.
    ``mode='targeted'``: ``y_target`` are adversarial labels and ``D = +grad loss(x_target, y_target)``.
    """
    g = param_grad(loss_fn, model, x_target, y_target, filter_spec)
    if mode == "untargeted":
        return jax.tree_util.tree_map(jnp.negative, g)
    if mode == "targeted":
        return g
    raise ValueError(f"mode must be 'untargeted' or 'targeted', got {mode!r}")


def poison_labels(x_perturbed: jax.Array, y_p: jax.Array, label_fn: Callable | None) -> jax.Array:
    """``y_p`` (labels kept) or ``label_fn(x_p + delta)`` (clean labels of the perturbed inputs)."""
    return y_p if label_fn is None else label_fn(x_perturbed)


def matching_loss(delta: jax.Array, model: PyTree, loss_fn: LossFn, x_p: jax.Array, y_p: jax.Array,
                  direction: PyTree, label_fn: Callable | None = None,
                  filter_spec=eqx.is_inexact_array, key: jax.Array | None = None) -> jax.Array:
    """``M(delta) = 1 - cos(g_p(delta), D)`` (module docstring). Differentiable in ``delta``.
    ``key``: passed to a stochastic ``loss_fn(model, x, y, key)``."""
    xp = x_p + delta
    g_p = param_grad(loss_fn, model, xp, poison_labels(xp, y_p, label_fn), filter_spec, key)
    return 1.0 - tree_cosine(g_p, direction)


# --------------------------------------------------------------------------------------------
# the end-of-sequence penalty and the energy share
# --------------------------------------------------------------------------------------------

def end_penalty_weights(L: int, power: float = 1.0, dtype=jnp.float64) -> jax.Array:
    """``w_i = (1 - i/(L-1))^power`` for ``i = 0..L-1``: 1 at the start, 0 at the last position."""
    if L < 2:
        return jnp.zeros((L,), dtype)
    i = jnp.arange(L, dtype=dtype)
    return (1.0 - i / (L - 1)) ** power


def end_penalty(delta: jax.Array, eps, penalty: float, power: float = 1.0) -> jax.Array:
    """``R(delta) = penalty (1/P) sum_n sum_i w_i ||delta_{n,i}/eps||^2`` (time on axis 1)."""
    L = delta.shape[1]
    w = end_penalty_weights(L, power, delta.dtype)
    e = jnp.abs(delta / eps) ** 2
    per_pos = jnp.sum(e.reshape(e.shape[0], L, -1), axis=(0, 2)) / delta.shape[0]
    return penalty * jnp.dot(w, per_pos)


def energy_share(delta, last_frac: float = 0.25, time_axis: int = 1) -> float:
    """Share of ``sum |delta|^2`` that lies in the last ``ceil(last_frac * L)`` time positions.

    ``delta`` has time on ``time_axis`` (default 1: ``(N, L)`` or ``(N, L, C)``); all other axes are
    summed. Uniform energy gives about ``ceil(last_frac L)/L``; NaN if ``delta`` is all zero.
    """
    if not 0.0 < last_frac <= 1.0:
        raise ValueError(f"last_frac must be in (0, 1], got {last_frac}")
    d = np.moveaxis(np.asarray(delta), time_axis, 0)
    L = d.shape[0]
    n_last = max(1, math.ceil(last_frac * L - 1e-9))
    per_pos = (np.abs(d) ** 2).reshape(L, -1).sum(axis=1)
    total = per_pos.sum()
    return float(per_pos[L - n_last:].sum() / total) if total > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# the projection
# --------------------------------------------------------------------------------------------

def box_bounds(x_p: jax.Array, eps, clip_min=None, clip_max=None) -> tuple[jax.Array, jax.Array]:
    """Per-entry bounds ``lo <= delta <= hi``: ``|delta| <= eps`` and, if given,
    ``clip_min <= x_p + delta <= clip_max``."""
    eps = jnp.asarray(eps, x_p.dtype)
    lo = jnp.broadcast_to(-eps, x_p.shape)
    hi = jnp.broadcast_to(eps, x_p.shape)
    if clip_min is not None:
        lo = jnp.maximum(lo, clip_min - x_p)
    if clip_max is not None:
        hi = jnp.minimum(hi, clip_max - x_p)
    return lo, jnp.maximum(hi, lo)


def project(delta: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Euclidean projection onto the box ``lo <= delta <= hi`` (coordinate-wise clip: the nearest point)."""
    return jnp.clip(delta, lo, hi)


# --------------------------------------------------------------------------------------------
# crafting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrewConfig:
    """Settings of :func:`craft_poisons`.

    ``eps``: ℓ∞ budget (in the units of ``x``); ``iterations`` sign-Adam steps per restart;
    ``restarts`` random starts (best final objective kept); ``lr``: step size in units of ``eps``
    (Adam fed with signs moves each entry by about ``lr * eps`` per step), divided by 10 at 3/8,
    5/8 and 7/8 of the iterations; ``penalty``/``penalty_power``: the end-of-sequence penalty
    (0 switches it off); ``clip_min``/``clip_max``: optional data range of ``x + delta`` (a number
    or an array that broadcasts against ``x``, e.g. one value per channel);
    ``init``: ``'uniform'`` (``eps U[-1,1]``, projected onto the box), ``'randn'`` (``eps N(0,1)``
    clipped to ``[-eps, eps]`` only, as the authors' ``Kettle.initialize_poison``; the data range is
    enforced from the first projection on) or ``'zeros'``.

    The authors' variants (docs/findings/realworld-authors.md; their ``forest/witchcoven/witch_base.py``):
    ``step='fixed'``: the Adam step size is ``lr`` itself in the units of ``x`` (their
    ``tau0 = tau * pbatch / 512``), not ``lr * eps``; ``select='last_iteration'``: keep the restart
    with the lowest objective *before the last step* (their ``target_losses`` of the last iteration,
    ``_brew``), not after it; ``reg_weights``: an array broadcasting against one poison ``x[0]``,
    ``w``; ``2 * delta * w`` is added to the gradient before the sign (their
    ``reg_factor * (h - i - 1)`` over image rows, ``_process_group_subset``); it is not part of the
    objective. ``stochastic``: ``loss_fn(model, x, y, key)`` gets a fresh key every iteration
    (augmentation and dropout while brewing).
    """

    eps: float
    iterations: int = 250
    restarts: int = 8
    lr: float = 0.1
    penalty: float = 0.0
    penalty_power: float = 1.0
    clip_min: float | np.ndarray | None = None
    clip_max: float | np.ndarray | None = None
    init: Literal["uniform", "randn", "zeros"] = "uniform"
    step: Literal["eps", "fixed"] = "eps"
    select: Literal["final", "last_iteration"] = "final"
    reg_weights: np.ndarray | None = None
    stochastic: bool = False

    def __post_init__(self):
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {self.penalty}")
        if self.init not in ("uniform", "randn", "zeros"):
            raise ValueError(f"init must be 'uniform', 'randn' or 'zeros', got {self.init!r}")
        if self.step not in ("eps", "fixed"):
            raise ValueError(f"step must be 'eps' or 'fixed', got {self.step!r}")
        if self.select not in ("final", "last_iteration"):
            raise ValueError(f"select must be 'final' or 'last_iteration', got {self.select!r}")
        if self.reg_weights is not None and np.any(np.asarray(self.reg_weights) < 0):
            raise ValueError("reg_weights must be >= 0")
        if (
            self.clip_min is not None
            and self.clip_max is not None
            and np.any(np.asarray(self.clip_min) > np.asarray(self.clip_max))
        ):
            raise ValueError(f"clip_min ({self.clip_min}) must be <= clip_max ({self.clip_max})")


class BrewResult(NamedTuple):
    """What :func:`craft_poisons` returns (arrays; the best restart unless noted)."""

    delta: jax.Array  # (P, ...) the perturbation of the best restart, inside the box
    objective: jax.Array  # M + R at ``delta``
    matching: jax.Array  # M at ``delta``
    penalty: jax.Array  # R at ``delta``
    restart_objectives: jax.Array  # (restarts,) the score of every restart (``select``)
    best_restart: jax.Array  # index of the kept restart
    history: jax.Array  # (iterations,) objective before each step of the kept restart (history[-1]:
    # the objective in the last iteration, the authors' restart score)


def lr_schedule(lr: float, iterations: int) -> optax.Schedule:
    """``lr`` divided by 10 at 3/8, 5/8 and 7/8 of ``iterations`` (the toolkit's milestones)."""
    bounds = {}
    for frac in (3 / 8, 5 / 8, 7 / 8):
        b = int(iterations * frac)
        bounds[b] = bounds.get(b, 1.0) * 0.1
    return optax.piecewise_constant_schedule(lr, bounds)


def _init_delta(key, shape, dtype, init: str, eps):
    if init == "zeros":
        return jnp.zeros(shape, dtype)
    if init == "uniform":
        return eps * jax.random.uniform(key, shape, dtype, -1.0, 1.0)
    return eps * jax.random.normal(key, shape, dtype)


def brew_objective(
    delta, model, loss_fn, x_p, y_p, direction, cfg: BrewConfig, label_fn=None, filter_spec=eqx.is_inexact_array
):
    """``(M + R, (M, R))`` at ``delta``."""
    return _objective(
        delta, model, loss_fn, x_p, y_p, direction, cfg.eps, cfg.penalty, cfg.penalty_power, label_fn, filter_spec
    )


def _objective(delta, model, loss_fn, x_p, y_p, direction, eps, penalty, power, label_fn, filter_spec, key=None):
    m = matching_loss(delta, model, loss_fn, x_p, y_p, direction, label_fn, filter_spec, key)
    r = end_penalty(delta, eps, penalty, power)
    return m + r, (m, r)


def craft_poisons(
    model: PyTree,
    loss_fn: LossFn,
    x_p: jax.Array,
    y_p: jax.Array,
    direction: PyTree,
    key: jax.Array,
    cfg: BrewConfig,
    label_fn: Callable | None = None,
    filter_spec=eqx.is_inexact_array,
) -> BrewResult:
    """Find ``delta`` in the box minimising ``M(delta) + R(delta)`` (module docstring).

    ``model`` is the (clean-trained) victim, ``x_p, y_p`` the poisons' clean inputs and labels,
    ``direction`` from :func:`target_direction`, ``label_fn`` (optional) relabels perturbed inputs.
    Deterministic given ``key``. Compiled (``lax.scan`` over iterations, ``lax.map`` over restarts);
    ``eps``, ``lr``, ``penalty`` and the clip range are traced, so sweeping them does not recompile.
    """
    x_p = jnp.asarray(x_p)
    hyper = {k: jnp.asarray(getattr(cfg, k), x_p.dtype) for k in ("eps", "lr", "penalty")}
    # the data range differs per seed (it comes from the train-set statistics): trace it too, and keep
    # only whether it is set in the static part, so seeds share one compilation
    for k in ("clip_min", "clip_max", "reg_weights"):
        if getattr(cfg, k) is not None:
            hyper[k] = jnp.asarray(getattr(cfg, k), x_p.dtype)
    static = replace(cfg, eps=1.0, lr=1.0, penalty=0.0, clip_min=None, clip_max=None, reg_weights=None)
    return _craft(model, loss_fn, x_p, jnp.asarray(y_p), direction, key, hyper, static, label_fn, filter_spec)


@eqx.filter_jit
def _craft(model, loss_fn, x_p, y_p, direction, key, hyper, cfg, label_fn, filter_spec):
    eps = hyper["eps"]
    lo, hi = box_bounds(x_p, eps, hyper.get("clip_min"), hyper.get("clip_max"))
    step_size = hyper["lr"] * eps if cfg.step == "eps" else hyper["lr"]
    opt = optax.adam(lr_schedule(step_size, cfg.iterations))
    objective = lambda d, k=None: _objective(
        d, model, loss_fn, x_p, y_p, direction, eps, hyper["penalty"], cfg.penalty_power, label_fn, filter_spec, k
    )
    value_and_grad = jax.value_and_grad(objective, has_aux=True)
    reg = hyper.get("reg_weights")

    def one_restart(k):
        d0 = _init_delta(k, x_p.shape, x_p.dtype, cfg.init, eps)
        k_iter = jax.random.fold_in(k, 1)  # used only by a stochastic loss
        delta0 = jnp.clip(d0, -eps, eps) if cfg.init == "randn" else project(d0, lo, hi)

        def step(carry, t):
            delta, state = carry
            kt = jax.random.fold_in(k_iter, t) if cfg.stochastic else None
            (val, _), g = value_and_grad(delta, kt)
            if reg is not None:
                g = g + 2 * delta * reg
            upd, state = opt.update(jnp.sign(g), state, delta)
            return (project(delta + upd, lo, hi), state), val

        (delta, _), hist = jax.lax.scan(step, (delta0, opt.init(delta0)), jnp.arange(cfg.iterations))
        kf = jax.random.fold_in(k_iter, cfg.iterations) if cfg.stochastic else None
        val, (m, r) = objective(delta, kf)
        return delta, val, m, r, hist

    deltas, vals, ms, rs, hists = jax.lax.map(one_restart, jax.random.split(key, cfg.restarts))
    scores = vals if cfg.select == "final" else hists[:, -1]
    best = jnp.argmin(jnp.where(jnp.isfinite(scores), scores, jnp.inf))
    return BrewResult(deltas[best], vals[best], ms[best], rs[best], scores, best, hists[best])
