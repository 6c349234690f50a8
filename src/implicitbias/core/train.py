"""The one compiled training loop (DESIGN: train.py).

``train`` runs a whole training run inside ``jax.lax.while_loop``: an outer loop over chunks of
``log_every`` updates (one log row per chunk) and an inner ``fori_loop`` of masked updates, so the
stopping rule is exact to the step while logging costs nothing per step. It is written for a single
run; ``train_batched`` runs many (seeds, configurations) in one shared loop over chunks with
per-run masks: a finished run stops changing while the others go on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import progress
from .optim import StopRule

PyTree = Any  # a pytree of arrays (the one alias, imported where needed)


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
    statics = (loss_fn, optimizer, rule, log_every, log_fn)
    n_chunks = math.ceil(rule.max_steps / log_every)
    state = _batched_init(params, data, *statics)
    if not progress.listened():
        state = _batched_advance(state, data, jnp.asarray(n_chunks, jnp.int32), *statics)
    else:
        state = _advance_reporting(state, data, statics, n_chunks)
    return _batched_finish(state, data, *statics)


# One shared loop over chunks (not a vmap of ``train``'s while_loop: with a batched predicate that
# becomes a select over the whole carry, log buffers included, after every chunk). A run that has
# stopped takes no more updates (``chunk`` masks them) and gets no more log rows; its final state
# goes to its own next row, exactly as in ``train``. The loop runs in one compiled call, or in
# segments of chunks while someone listens for progress: the same executable either way (the
# segment's end is data), so the numbers do not depend on it.


class _Batched(NamedTuple):
    logs: PyTree  # (max_logs, B, ...) per logged quantity, row-major in the chunk index
    log_steps: jax.Array  # (max_logs, B)
    inner: _Inner  # batched
    rows_done: jax.Array  # (B,) log rows written per run (= chunks it ran)
    g: jax.Array  # chunks run by the shared loop


@eqx.filter_jit
def _batched_init(params, data, loss_fn, optimizer, rule, log_every, log_fn) -> _Batched:
    loop = _loop(loss_fn, optimizer, rule, log_every)
    max_logs = math.ceil(rule.max_steps / log_every) + 1
    batch = jax.tree_util.tree_leaves(params)[0].shape[0]
    row_shape = jax.eval_shape(jax.vmap(log_fn), params, data)  # (B, ...) per entry
    # log buffers row-major in the chunk index, so each chunk writes one contiguous slice in place
    logs0 = jax.tree_util.tree_map(lambda s: jnp.full((max_logs,) + s.shape, jnp.nan, s.dtype), row_shape)
    log_steps0 = jnp.full((max_logs, batch), -1, jnp.int32)
    return _Batched(logs0, log_steps0, jax.vmap(loop.init)(params), jnp.zeros((batch,), jnp.int32),
                    jnp.zeros((), jnp.int32))


@eqx.filter_jit
def _batched_advance(state: _Batched, data, stop_chunk, loss_fn, optimizer, rule, log_every, log_fn) -> _Batched:
    """Run the shared loop until every run has stopped or ``stop_chunk`` chunks have run in all."""
    loop = _loop(loss_fn, optimizer, rule, log_every)
    n_chunks = math.ceil(rule.max_steps / log_every)
    stopped = jax.vmap(loop.stopped)
    chunk = jax.vmap(loop.chunk)
    rows = jax.vmap(log_fn)

    def mask(active, new, old):
        return jnp.where(active.reshape(active.shape + (1,) * (new.ndim - 1)), new, old)

    def cond(s: _Batched):
        return jnp.any(~stopped(s.inner)) & (s.g < jnp.minimum(n_chunks, stop_chunk))

    def body(s: _Batched) -> _Batched:
        active = ~stopped(s.inner)
        row = rows(s.inner.params, data)
        logs = jax.tree_util.tree_map(lambda buf, r: buf.at[s.g].set(mask(active, r, buf[s.g])), s.logs, row)
        log_steps = s.log_steps.at[s.g].set(jnp.where(active, s.inner.t, s.log_steps[s.g]))
        return _Batched(logs, log_steps, chunk(s.inner, data), s.rows_done + active.astype(jnp.int32), s.g + 1)

    return jax.lax.while_loop(cond, body, state)


@eqx.filter_jit
def _batched_finish(state: _Batched, data, loss_fn, optimizer, rule, log_every, log_fn) -> TrainResult:
    loop = _loop(loss_fn, optimizer, rule, log_every)
    inner, rows_done = state.inner, state.rows_done
    cols = jnp.arange(rows_done.shape[0])
    final = jax.vmap(log_fn)(inner.params, data)
    logs = jax.tree_util.tree_map(lambda buf, r: buf.at[rows_done, cols].set(r), state.logs, final)
    log_steps = state.log_steps.at[rows_done, cols].set(inner.t)
    to_batch_major = lambda x: jnp.moveaxis(x, 0, 1)
    return TrainResult(
        inner.params, inner.t, inner.hit, inner.div, inner.div_step, inner.stalled,
        jax.vmap(loss_fn)(inner.params, data), *jax.vmap(loop.measured)(inner), to_batch_major(log_steps),
        jax.tree_util.tree_map(to_batch_major, logs), rows_done + 1,
    )


@eqx.filter_jit
def _stopped(state: _Batched, loss_fn, optimizer, rule, log_every):
    return jax.vmap(_loop(loss_fn, optimizer, rule, log_every).stopped)(state.inner)


PROGRESS_SECONDS = 0.5  # aim of one segment's wall time while someone listens


def _advance_reporting(state: _Batched, data, statics, n_chunks: int) -> _Batched:
    """Run the loop in segments, reporting a :class:`~implicitbias.core.progress.TrainProgress` after each;
    a segment's length (in chunks) adapts so that it takes about ``PROGRESS_SECONDS``."""
    loss_fn, optimizer, rule, log_every, _ = statics
    start = time.perf_counter()
    g, size = 0, 1
    while True:
        t0 = time.perf_counter()
        state = _batched_advance(state, data, jnp.asarray(min(g + size, n_chunks), jnp.int32), *statics)
        stopped = np.asarray(_stopped(state, loss_fn, optimizer, rule, log_every))
        g_new = int(state.g)
        t, hit = np.asarray(state.inner.t), np.asarray(state.inner.hit)
        running = ~stopped
        fitted = running & (hit >= 0)
        remaining = None
        if running.any() and fitted.sum() == running.sum():
            remaining = int(np.max(np.minimum(hit + rule.extra_steps, rule.max_steps)[running] - t[running]))
        elif not running.any():
            remaining = 0
        progress.report(progress.TrainProgress(
            updates=int(t.max()), running=int(running.sum()), runs=int(t.shape[0]),
            fitted=int((hit >= 0).sum()), remaining=remaining, max_steps=rule.max_steps,
            seconds=time.perf_counter() - start))
        if not running.any() or g_new >= n_chunks or g_new == g:
            return state
        elapsed = time.perf_counter() - t0
        # a segment that ran in well under the aim (the first one compiles) grows; never past 4x at once
        if elapsed < PROGRESS_SECONDS / 2:
            size = min(size * 4, max(1, n_chunks))
        g = g_new
