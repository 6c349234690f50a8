"""Optimisers (SPEC §1, §2b, §2c) and the stopping rule "train to eps, then k more steps".

Plain GD and Adam come from Optax; the paper's adaptive learning rate is an Optax
``GradientTransformation`` of its own so it composes with the same training loop.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax


class AdaptiveLRState(NamedTuple):
    G: jax.Array  # running average of the summed gradient norms
    count: jax.Array  # number of updates taken so far (t)


def adaptive_lr(G: jax.Array, t: jax.Array, lr0: float, beta: float, soft: float) -> jax.Array:
    """``lr_t = lr0 / (sqrt(G_t / (1 - beta^(t+1))) + soft)`` (SPEC §1)."""
    return lr0 / (jnp.sqrt(G / (1.0 - beta ** (t + 1))) + soft)


def adaptive_gd(lr0: float, beta: float = 0.8, soft: float = 1e-6) -> optax.GradientTransformation:
    """Full-batch GD with the paper's adaptive learning rate (SPEC §1).

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


OPTIMIZERS = ("gd", "adaptive_gd", "adam")


@functools.cache
def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    """``'gd'`` (plain), ``'adaptive_gd'`` (SPEC §1) or ``'adam'`` (Optax defaults).

    Cached, so the same (name, lr) gives the same object and compiled training loops are reused.
    """
    if name == "gd":
        return optax.sgd(lr)
    if name == "adaptive_gd":
        return adaptive_gd(lr)
    if name == "adam":
        return optax.adam(lr)
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
        return jax.tree_util.tree_map(lambda u: u * self.lr, updates), state


def runtime_lr_optimizer(name: str, lr: float) -> RuntimeLR:
    """:class:`RuntimeLR` for ``'gd'``, ``'adaptive_gd'`` or ``'adam'``."""
    return RuntimeLR(make_optimizer(name, 1.0), jnp.asarray(lr, jnp.float64))


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
    has long plateaus that look frozen and then escape. Measured: beyond_theorem/L6 with
    ``warm_init=0``, seed 2, kept its loss equal to 9 digits from step 100 to step 187,300 and then
    reached eps (its run ended at step 433,686, after the extra steps); ``stall_tol=1e-12`` over 100-step chunks would have stopped it at step 100.
    """

    eps: float
    extra_steps: int
    max_steps: int
    stall_tol: float = 0.0  # > 0: stop a run whose loss, above eps, changed by <= stall_tol (relative) over a log chunk

    def __post_init__(self):
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.extra_steps < 0:
            raise ValueError(f"extra_steps must be >= 0, got {self.extra_steps}")
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be > 0, got {self.max_steps}")
        if not self.stall_tol >= 0:
            raise ValueError(f"stall_tol must be >= 0, got {self.stall_tol}")
