"""Training-time defenses for the teacher-student task (docs/science.md §5, "Defenses").

* **Per-example clipping with noise** (DP-SGD style, Hong et al. 2020): the full-batch gradient is
  replaced by ``(1/N) sum_n min(1, C_t/||g_n||) g_n + (sigma C_t / N) z`` before the optimiser.
  From a near-zero initialisation gradients change by orders of magnitude during training, so a
  fixed clip norm would clip everything or nothing; ``C_t`` is the ``quantile`` of the per-example
  norms at that step (adaptive clipping, as Andrew et al. 2021 track a quantile). The loss value the
  stop rule sees stays the true training loss. ``z`` comes from a stream per run
  (seeded by the run's seed, apart from its data and init keys), one draw per update.
* **Circular time shifts** (:func:`circular_shifts`): every input is added in all ``S`` circular
  rolls, keeping its label. This is label-preserving only when the target does not depend on when
  an input arrives (classification by assumption; in Table 1's beyond-Theorem cells the teacher is
  ``h*_k = 1``, so ``y* = sum_t u_t`` is invariant to rolls); the per-Theorem teacher
  (``h*_1 = d``) is not, and the experiment does not run it there.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core.ssm import powers


class Noisy(eqx.Module):
    """A model with two extra scalar leaves for :func:`dp_optimizer`: ``aux`` (value ``1/n``, the
    inverse number of real rows) carries the step's clip norm to the optimiser through its gradient
    (:func:`clipped_loss`); ``seed`` seeds the run's noise stream. Neither ever moves."""

    model: eqx.Module
    aux: jax.Array
    seed: jax.Array

    def __call__(self, X):
        return self.model(X)


def clipped_loss(quantile: float):
    """``loss(noisy, data)`` whose value is the training loss (mean over the ``data['n']`` real rows,
    as :func:`implicitbias.tasks.teacher_student.train_loss`) and whose gradient is the clipped mean
    of the per-example gradients, with ``dL/d aux = C_t`` (the clip norm) for :class:`DPOptimizer`.
    Rows with ``data['w'] = 0`` (padding, removed examples) take no part, not even in the quantile."""

    def loss(noisy: Noisy, data) -> jax.Array:
        model = noisy.model
        X, y, w, n = data["X"], data["y"], data["w"], data["n"]
        per = lambda m: (m(X) - y) ** 2
        value = jnp.sum(w * per(model)) / n
        # per-example gradient norms in closed form: y_n = U_n . h with U_n the row read backwards
        # (U_n[k-1] = u_{n, L-k}), so grad l_n = 2 r_n J^T U_n with J = dh/d(a, B, C) (L, 3d) from
        # h_k = sum_i B_i C_i a_i^(k-1); norms over the parameters that move (a full-kernel model's
        # off-diagonal gradient entries are projected away by its update)
        L = X.shape[1]
        a, B, C = model.a, model.B, model.C
        P = powers(a, L)  # (L, d): row k-1 holds a^(k-1)
        dP = jnp.concatenate([jnp.zeros_like(P[:1]), jnp.arange(1, L, dtype=P.dtype)[:, None] * P[:-1]])
        J = jnp.concatenate([dP * (B * C), P * C, P * B], axis=1)
        U = X[:, ::-1]
        r = model(X) - y
        norms = 2.0 * jnp.abs(r) * jnp.sqrt(jnp.maximum(jnp.einsum("nk,kl,nl->n", U, J @ J.T, U), 0.0))
        # the quantile over real rows only: padded rows sort to the top as +inf and the index skips them
        srt = jnp.sort(jnp.where(w > 0, norms, jnp.inf))
        pos = quantile * (n - 1)
        lo = jnp.floor(pos).astype(jnp.int32)
        hi = jnp.minimum(lo + 1, (n - 1).astype(jnp.int32))
        clip = srt[lo] + (pos - lo) * (srt[hi] - srt[lo])
        factor = jax.lax.stop_gradient(w * jnp.minimum(1.0, clip / jnp.maximum(norms, 1e-300)))
        surrogate = jnp.sum(factor * per(model)) / n
        carry = noisy.aux * jax.lax.stop_gradient(clip)
        sg = jax.lax.stop_gradient
        return sg(value) + (surrogate - sg(surrogate)) + (carry - sg(carry))

    return loss


class NoiseState(NamedTuple):
    key: jax.Array
    count: jax.Array
    inner: optax.OptState


class DPOptimizer(eqx.Module):
    """Add ``sigma C_t / n z`` to the model's gradient (``C_t = grads.aux``, ``1/n = params.aux``,
    ``z ~ N(0, I)`` from the stream of ``params.seed``, one draw per update), zero the gradients of
    the extra leaves, then hand the model's gradient to ``inner`` (e.g. the adaptive learning rate,
    which so sees the model's parameters only)."""

    inner: object
    sigma: float = eqx.field(static=True)

    def init(self, params: Noisy):
        key = jax.random.fold_in(jax.random.PRNGKey(params.seed.astype(jnp.int32)), 104729)
        return NoiseState(key, jnp.zeros((), jnp.int32), self.inner.init(params.model))

    def update(self, grads: Noisy, state: NoiseState, params: Noisy):
        scale = self.sigma * grads.aux * params.aux
        leaves, tree = jax.tree_util.tree_flatten(grads.model)
        keys = jax.random.split(jax.random.fold_in(state.key, state.count), len(leaves))
        noisy = [g + scale * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys)]
        updates, inner = self.inner.update(jax.tree_util.tree_unflatten(tree, noisy), state.inner, params.model)
        zero = jnp.zeros_like(params.aux)
        return Noisy(updates, zero, jnp.zeros_like(params.seed)), NoiseState(state.key, state.count + 1, inner)


def circular_shifts(X, y, w, shifts: int):
    """Every row of ``X: (N, L)`` in its circular rolls by ``0..shifts-1`` positions (toward the
    end), labels ``y`` and row weights ``w`` repeated: ``(shifts N, L), (shifts N,), (shifts N,)``,
    grouped by shift (rows ``s N .. (s+1) N - 1`` are roll ``s``)."""
    X = np.asarray(X)
    Xs = np.concatenate([np.roll(X, s, axis=1) for s in range(shifts)])
    return Xs, np.tile(np.asarray(y), shifts), np.tile(np.asarray(w), shifts)
