"""The one compiled training loop (DESIGN: train.py).

``train`` runs a whole training run inside ``jax.lax.while_loop``: an outer loop over chunks of
``log_every`` updates (one log row per chunk) and an inner ``fori_loop`` of masked updates, so the
stopping rule is exact to the step while logging costs nothing per step. It is written for a single
run; ``train_batched`` runs many (seeds, configurations) in one shared loop over chunks with
per-run masks: a finished run stops changing while the others go on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .optim import StopRule

PyTree = Any


class TrainResult(NamedTuple):
    """What one training run returns (leading batch axis added by ``vmap``)."""

    params: PyTree  # final parameters
    steps: jax.Array  # updates taken
    hit_step: jax.Array  # first t with L(theta_t) <= eps, or -1
    diverged: jax.Array  # loss became NaN/inf (training stopped there)
    diverged_step: jax.Array  # t at which it did, or -1
    stalled: jax.Array  # stopped by the stall rule (loss frozen above eps; see StopRule.stall_tol)
    final_loss: jax.Array  # L(final params)
    measured: PyTree  # parameters after update hit + rule.measured_after (the final ones if never reached)
    measured_step: jax.Array  # the update count of ``measured``
    log_steps: jax.Array  # (max_logs,) update count of each log row, -1 where unused
    logs: PyTree  # dict of (max_logs, ...) arrays from ``log_fn``; unused rows are NaN
    n_logs: jax.Array  # number of rows written


class _Inner(NamedTuple):
    params: PyTree
    opt_state: PyTree
    t: jax.Array  # updates taken
    hit: jax.Array  # first t with loss <= eps, or -1
    div: jax.Array
    div_step: jax.Array
    stalled: jax.Array
    measured: PyTree  # params at t = hit + rule.measure_at (None when that is the end: nothing to keep)
    measured_step: jax.Array  # t of ``measured``, or -1 while not taken


class _Loop(NamedTuple):
    """The pieces of one run's loop, shared by ``train`` (one run) and ``train_batched`` (many)."""

    stopped: Callable  # _Inner -> bool
    chunk: Callable  # (_Inner, data) -> _Inner after up to ``log_every`` masked updates
    init: Callable  # params -> _Inner
    measured: Callable  # _Inner -> (params, step): the kept parameters, or the final ones if never kept


def _loop(loss_fn, optimizer, rule: StopRule, log_every: int) -> _Loop:
    if log_every <= 0:
        raise ValueError(f"log_every must be > 0, got {log_every}")
    value_and_grad = jax.value_and_grad(loss_fn)
    int_ = jnp.int32
    # parameters read before the end are kept aside by a masked copy per update; at the end they are the final ones
    keep_measured = rule.measured_after != rule.extra_steps

    def stopped(c: _Inner):
        return c.div | c.stalled | ((c.hit >= 0) & (c.t >= c.hit + rule.extra_steps)) | (c.t >= rule.max_steps)

    def chunk(c: _Inner, data) -> _Inner:
        def update(_, c: _Inner) -> _Inner:
            loss, grads = value_and_grad(c.params, data)
            bad = ~jnp.isfinite(loss)
            done = stopped(c)
            c = c._replace(div_step=jnp.where(~done & bad, c.t, c.div_step), div=c.div | (~done & bad),
                           hit=jnp.where(~done & ~bad & (c.hit < 0) & (loss <= rule.eps), c.t, c.hit))
            if keep_measured:
                take = (c.measured_step < 0) & (c.hit >= 0) & (c.t == c.hit + rule.measured_after)
                c = c._replace(
                    measured=jax.tree_util.tree_map(lambda p, m: jnp.where(take, p, m), c.params, c.measured),
                    measured_step=jnp.where(take, c.t, c.measured_step),
                )
            go = ~stopped(c)
            updates, new_opt_state = optimizer.update(grads, c.opt_state, c.params)
            new_params = optax.apply_updates(c.params, updates)
            keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(go, n, o), new, old)
            return c._replace(params=keep(new_params, c.params), opt_state=keep(new_opt_state, c.opt_state),
                              t=c.t + go.astype(int_))

        if rule.stall_tol > 0:
            before, t0 = loss_fn(c.params, data), c.t
        c = jax.lax.fori_loop(0, log_every, update, c)
        if rule.stall_tol > 0:
            # a whole chunk of updates that left the loss (above eps) unchanged to stall_tol: frozen
            after = loss_fn(c.params, data)
            frozen = (
                (c.hit < 0) & (c.t == t0 + log_every) & (jnp.abs(after - before) <= rule.stall_tol * jnp.abs(before))
            )
            c = c._replace(stalled=c.stalled | (~stopped(c) & frozen))
        return c

    def init(params) -> _Inner:
        return _Inner(
            params,
            optimizer.init(params),
            jnp.zeros((), int_),
            jnp.full((), -1, int_),
            jnp.zeros((), bool),
            jnp.full((), -1, int_),
            jnp.zeros((), bool),
            params if keep_measured else None,
            jnp.full((), -1, int_),
        )

    def measured(c: _Inner):
        if not keep_measured:
            return c.params, c.t
        kept = c.measured_step >= 0
        return (
            jax.tree_util.tree_map(lambda m, p: jnp.where(kept, m, p), c.measured, c.params),
            jnp.where(kept, c.measured_step, c.t),
        )

    return _Loop(stopped, chunk, init, measured)


def train(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    data: PyTree,
    optimizer: optax.GradientTransformation,
    rule: StopRule,
    log_every: int,
    log_fn: Callable[[PyTree, PyTree], dict[str, jax.Array]],
) -> TrainResult:
    """Train ``params`` on ``loss_fn(params, data)`` until ``rule`` says stop.

    ``log_fn(params, data)`` returns a dict of arrays recorded before update 0, after every
    ``log_every`` updates, and at the end. A non-finite loss stops the run and marks it diverged.
    Pure and traceable: jit it. For many runs use ``train_batched`` (same results, and its log
    buffers are written in place; a ``vmap`` of this function selects over the whole log buffer
    after every chunk, which makes long runs quadratic in their number of log rows).
    """
    loop = _loop(loss_fn, optimizer, rule, log_every)
    n_chunks = math.ceil(rule.max_steps / log_every)
    max_logs = n_chunks + 1

    def write_log(logs, log_steps, i, params, t):
        row = log_fn(params, data)
        logs = jax.tree_util.tree_map(lambda buf, r: buf.at[i].set(r), logs, row)
        return logs, log_steps.at[i].set(t)

    row_shape = jax.eval_shape(log_fn, params, data)
    logs0 = jax.tree_util.tree_map(lambda s: jnp.full((max_logs,) + s.shape, jnp.nan, s.dtype), row_shape)
    log_steps0 = jnp.full((max_logs,), -1, jnp.int32)

    def cond(state):
        _, inner, i = state
        return ~loop.stopped(inner) & (i < n_chunks)

    def body(state):
        (logs, log_steps), inner, i = state
        logs, log_steps = write_log(logs, log_steps, i, inner.params, inner.t)
        return (logs, log_steps), loop.chunk(inner, data), i + 1

    (logs, log_steps), inner, i = jax.lax.while_loop(
        cond, body, ((logs0, log_steps0), loop.init(params), jnp.zeros((), jnp.int32))
    )
    logs, log_steps = write_log(logs, log_steps, i, inner.params, inner.t)
    return TrainResult(
        inner.params, inner.t, inner.hit, inner.div, inner.div_step, inner.stalled, loss_fn(inner.params, data),
        *loop.measured(inner), log_steps, logs, i + 1,
    )


def train_batched(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    data: PyTree,
    optimizer: optax.GradientTransformation,
    rule: StopRule,
    log_every: int,
    log_fn: Callable[[PyTree, PyTree], dict[str, jax.Array]],
) -> TrainResult:
    """``train`` vmapped over the leading axis of ``params`` and ``data`` (one run per entry), jitted.

    The compiled program is cached on (``loss_fn``, ``optimizer``, ``rule``, ``log_every``,
    ``log_fn``) and the shapes: pass the *same* function and optimizer objects to reuse it (build
    them once, e.g. with ``functools.cache``); fresh closures on every call recompile every call.
    """
    return _train_vmapped(loss_fn, params, data, optimizer, rule, log_every, log_fn)


@eqx.filter_jit
def _train_vmapped(loss_fn, params, data, optimizer, rule, log_every, log_fn) -> TrainResult:
    # One shared loop over chunks (not a vmap of ``train``'s while_loop: with a batched predicate that
    # becomes a select over the whole carry, log buffers included, after every chunk). A run that
    # has stopped takes no more updates (``chunk`` masks them) and gets no more log rows; its
    # final state goes to its own next row, exactly as in ``train``.
    loop = _loop(loss_fn, optimizer, rule, log_every)
    n_chunks = math.ceil(rule.max_steps / log_every)
    max_logs = n_chunks + 1
    batch = jax.tree_util.tree_leaves(params)[0].shape[0]
    stopped = jax.vmap(loop.stopped)
    chunk = jax.vmap(loop.chunk)
    rows = jax.vmap(log_fn)
    row_shape = jax.eval_shape(rows, params, data)  # (B, ...) per entry
    # log buffers row-major in the chunk index, so each chunk writes one contiguous slice in place
    logs0 = jax.tree_util.tree_map(lambda s: jnp.full((max_logs,) + s.shape, jnp.nan, s.dtype), row_shape)
    log_steps0 = jnp.full((max_logs, batch), -1, jnp.int32)
    rows_done0 = jnp.zeros((batch,), jnp.int32)  # log rows written per run (= chunks it ran)

    def mask(active, new, old):
        return jnp.where(active.reshape(active.shape + (1,) * (new.ndim - 1)), new, old)

    def cond(state):
        _, inner, _, g = state
        return jnp.any(~stopped(inner)) & (g < n_chunks)

    def body(state):
        (logs, log_steps), inner, rows_done, g = state
        active = ~stopped(inner)
        row = rows(inner.params, data)
        logs = jax.tree_util.tree_map(lambda buf, r: buf.at[g].set(mask(active, r, buf[g])), logs, row)
        log_steps = log_steps.at[g].set(jnp.where(active, inner.t, log_steps[g]))
        return (logs, log_steps), chunk(inner, data), rows_done + active.astype(jnp.int32), g + 1

    inner0 = jax.vmap(loop.init)(params)
    state0 = ((logs0, log_steps0), inner0, rows_done0, jnp.zeros((), jnp.int32))
    (logs, log_steps), inner, rows_done, _ = jax.lax.while_loop(cond, body, state0)
    cols = jnp.arange(batch)
    final = rows(inner.params, data)
    logs = jax.tree_util.tree_map(lambda buf, r: buf.at[rows_done, cols].set(r), logs, final)
    log_steps = log_steps.at[rows_done, cols].set(inner.t)
    to_batch_major = lambda x: jnp.moveaxis(x, 0, 1)
    return TrainResult(
        inner.params, inner.t, inner.hit, inner.div, inner.div_step, inner.stalled,
        jax.vmap(loss_fn)(inner.params, data), *jax.vmap(loop.measured)(inner), to_batch_major(log_steps),
        jax.tree_util.tree_map(to_batch_major, logs), rows_done + 1,
    )
