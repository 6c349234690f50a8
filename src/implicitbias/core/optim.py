"""Optimisers (docs/science.md §1, §2b, §2c) and the stopping rule "train to eps, then k more steps".

Plain GD and Adam come from Optax; the paper's adaptive learning rate is an Optax
``GradientTransformation`` of its own so it composes with the same training loop.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
import optax


class AdaptiveLRState(NamedTuple):
    G: jax.Array  # running average of the summed gradient norms
    count: jax.Array  # number of updates taken so far (t)


def adaptive_lr(G: jax.Array, t: jax.Array, lr0: float, beta: float, soft: float) -> jax.Array:
    """``lr_t = lr0 / (sqrt(G_t / (1 - beta^(t+1))) + soft)`` (docs/science.md §1)."""
    return lr0 / (jnp.sqrt(G / (1.0 - beta ** (t + 1))) + soft)


def adaptive_gd(lr0: float, beta: float = 0.8, soft: float = 1e-6) -> optax.GradientTransformation:
    """Full-batch GD with the paper's adaptive learning rate (docs/science.md §1).

    ``G_t = beta G_{t-1} + (1 - beta) sum_W ||grad_W L||`` (the *unsquared* norm of each
    parameter array's gradient, summed), ``G_{-1} = 0``; the update is ``-lr_t * grad``.
    """

    def init(params):
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        return AdaptiveLRState(jnp.zeros((), dtype), jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        del params
        gnorm = sum(jnp.linalg.norm(g) for g in jax.tree_util.tree_leaves(grads))
        G = beta * state.G + (1.0 - beta) * gnorm
        lr = adaptive_lr(G, state.count, lr0, beta, soft)
        updates = jax.tree_util.tree_map(lambda g: -lr * g, grads)
        return updates, AdaptiveLRState(G, state.count + 1)

    return optax.GradientTransformation(init, update)


class KerasAdamState(NamedTuple):
    m: optax.Updates
    v: optax.Updates
    count: jax.Array


def keras_adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7) -> optax.GradientTransformation:
    """Adam as Keras implements it (the paper's SSM-in-NN runs, docs/science.md §2c).

    ``theta -= lr sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)``: epsilon is added before
    the bias correction, so it acts as ``eps / sqrt(1 - b2^t)`` in Optax's form (30x larger at the
    first step) and defaults to 1e-7. Coordinates whose gradients are far below epsilon move
    like plain GD rather than at Adam's unit speed, which matters from a near-zero initialisation.
    """

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return KerasAdamState(zeros, zeros, jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        # Keras's order of operations, in the parameters' own dtype (float32 runs round as TF does)
        m = jax.tree_util.tree_map(lambda m, g: m + (g - m) * (1 - b1), state.m, grads)
        v = jax.tree_util.tree_map(lambda v, g: v + (g * g - v) * (1 - b2), state.v, grads)

        def update_of(m, v):
            tt = t.astype(m.dtype)
            alpha = lr * jnp.sqrt(1 - b2**tt) / (1 - b1**tt)
            return -(m * alpha) / (jnp.sqrt(v) + eps)

        return jax.tree_util.tree_map(update_of, m, v), KerasAdamState(m, v, t)

    return optax.GradientTransformation(init, update)


# make_optimizer's names: the one registry (a config field typed Optimizer is checked against it)
Optimizer = Literal["gd", "adaptive_gd", "adam", "keras_adam", "group_rmsprop"]
OPTIMIZERS = get_args(Optimizer)


def keep_diagonal() -> optax.GradientTransformation:
    """Replace the update of every parameter node with a ``constrained()`` method by
    ``node.constrained()``: for :class:`~implicitbias.core.ssm.FullKernelSSM`, ``A``'s update projected
    onto its diagonal (Keras's diagonal constraint, applied after the update: ``A`` stays diagonal)
    and, with its ``train_BC=False``, zero ``B, C`` updates. Duck-typed, so the optimiser needs no
    model class."""
    is_full = lambda x: callable(getattr(x, "constrained", None))

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u: u.constrained() if is_full(u) else u, updates, is_leaf=is_full), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@functools.cache
def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    """The optimiser registry: ``'gd'`` (plain), ``'adaptive_gd'`` (docs/science.md §1), ``'adam'`` (Optax
    defaults), ``'keras_adam'`` (Keras's Adam) or ``'group_rmsprop'`` (the "GD" of the matrix-factorization
    code, :func:`group_rmsprop`). The sequence classifiers' AdamW with its schedules is
    :func:`implicitbias.models.training.classifier_optimizer`.

    Cached, so the same (name, lr) gives the same object and compiled training loops are reused.
    """
    if name == "gd":
        return optax.sgd(lr)
    if name == "adaptive_gd":
        return adaptive_gd(lr)
    if name == "adam":
        return optax.adam(lr)
    if name == "keras_adam":
        return keras_adam(lr)
    if name == "group_rmsprop":
        return group_rmsprop(lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


class RuntimeLR(eqx.Module):
    """``make_optimizer(name, 1.0)`` with every update scaled by ``lr``, a traced array.

    Equivalent to ``make_optimizer(name, lr)`` (GD, Adam and the adaptive rule are all linear in
    their learning rate), but the compiled training loop takes ``lr`` as data: runs that differ
    only in learning rate share one compiled program.
    """

    base: optax.GradientTransformation = eqx.field(static=True)
    lr: jax.Array

    def init(self, params):
        return self.base.init(params)

    def update(self, grads, state, params=None):
        updates, state = self.base.update(grads, state, params)
        return jax.tree_util.tree_map(lambda u: u * self.lr.astype(u.dtype), updates), state


@functools.cache
def _projected(name: str) -> optax.GradientTransformation:
    return optax.chain(make_optimizer(name, 1.0), keep_diagonal())


def runtime_lr_optimizer(name: str, lr: float, diagonal_constraint: bool = False) -> RuntimeLR:
    """:class:`RuntimeLR` for any of :data:`OPTIMIZERS`; ``diagonal_constraint`` chains
    :func:`keep_diagonal` (for models holding a :class:`~implicitbias.core.ssm.FullKernelSSM`)."""
    base = _projected(name) if diagonal_constraint else make_optimizer(name, 1.0)
    return RuntimeLR(base, jnp.asarray(lr, jnp.float64))


@dataclass(frozen=True)
class StopRule:
    """Train until ``L_train <= eps``, then ``extra_steps`` more updates; never more than ``max_steps``.

    With ``t`` the number of updates taken, the loss ``L(theta_t)`` is checked before each update;
    the first ``t`` with ``L(theta_t) <= eps`` is the hit step, and training ends after update
    ``hit + extra_steps``.

    ``stall_tol > 0`` adds one more stop: a run that has not reached ``eps`` and whose loss changed
    by no more than ``stall_tol`` (relative) over a whole log chunk is *stalled* (e.g. a network
    whose ReLUs are all off: the gradient is exactly zero and GD can never leave). It is recorded as
    not fit; ``0`` (the default) switches the rule off. Use it with care: greedy low-rank learning
    has long plateaus that look frozen and then escape (a measured case: docs/findings/table1.md,
    ``stall_tol``).

    ``measure_at`` (not a stop): the number of updates after the hit whose parameters the loop keeps
    aside as well (``TrainResult.measured``), for reading a result where a reference reads it
    before the end; ``None`` means ``extra_steps`` (the end).
    """

    eps: float
    extra_steps: int
    max_steps: int
    stall_tol: float = 0.0  # > 0: stop a run whose loss, above eps, changed by <= stall_tol (relative) over a log chunk
    measure_at: int | None = None  # updates after the hit whose parameters are kept; None = extra_steps

    def __post_init__(self):
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.extra_steps < 0:
            raise ValueError(f"extra_steps must be >= 0, got {self.extra_steps}")
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be > 0, got {self.max_steps}")
        if not self.stall_tol >= 0:
            raise ValueError(f"stall_tol must be >= 0, got {self.stall_tol}")
        if self.measure_at is not None and not 0 <= self.measure_at <= self.extra_steps:
            raise ValueError(f"measure_at must be in 0..extra_steps ({self.extra_steps}), got {self.measure_at}")

    @property
    def measured_after(self) -> int:
        """Updates after the hit at which the measured parameters are taken."""
        return self.extra_steps if self.measure_at is None else self.measure_at


class GroupRMSpropState(NamedTuple):
    square_avg: jax.Array  # running average of the squared gradient norm, summed over all parameters
    count: jax.Array  # updates taken so far


def group_rmsprop(lr: float, alpha: float = 0.99, eps: float = 1e-6) -> optax.GradientTransformation:
    """The "GD" of Alexander et al.'s matrix-factorization code (``common/models/group_rmsprop.py`` in
    ``YoniSlutzky98/nn-gd-gen-mf``, one parameter group): ``v_t = alpha v_{t-1} + (1 - alpha) sum_W
    ||grad_W L||^2`` (squared norms, all parameters together), ``v_0 = 0``, and the update
    ``-lr / (sqrt(v_t / (1 - alpha^t)) + eps) * grad`` for ``t = 1, 2, ...``: gradient descent whose
    step is normalised by a running RMS of the whole gradient's norm (docs/science.md §5, G&C vs GD)."""

    def init(params):
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        return GroupRMSpropState(jnp.zeros((), dtype), jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        del params
        t = state.count + 1
        sq = sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads))
        v = alpha * state.square_avg + (1.0 - alpha) * sq
        step = lr / (jnp.sqrt(v / (1.0 - alpha ** t.astype(v.dtype))) + eps)
        return jax.tree_util.tree_map(lambda g: -step * g, grads), GroupRMSpropState(v, t)

    return optax.GradientTransformation(init, update)
