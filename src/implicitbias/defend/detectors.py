"""Detectors: a suspicion score for every training example (docs/science.md §5, "Defenses").

Theory-guided, for the teacher-student task (docs/science.md §1; inputs ``X: (N, L)``, position ``j`` meets
``h_{L-j}``):

* :func:`energy_tail` -- the share of an input's energy in its last positions (special sequences
  put all of theirs there);
* :func:`nongreedy_share` -- the share of an example's contribution to docs/science.md §1's ``gamma^(l)`` that
  falls on the powers ``l = 0, 1``. With ``dL/da_i = -B_i C_i sum_l gamma^(l) a_i^l``, a term of power
  ``l`` grows ``a_i`` at a relative rate ``~ a_i^(l-1)``: for ``l >= 2`` the largest entry grows
  fastest (greedy, low rank), ``l = 1`` is neutral and ``l = 0`` lets the small entries catch up
  (non-greedy). Baseline rows of Table 1 touch only the high powers;
* :func:`gamma0_magnitude` -- the example's own share of ``gamma^(0)`` at a model (the paper's
  quantity: exactly 0 without special sequences).

Influence-style: :func:`influence` sums, over checkpoints of the training run, each example's
gradient step projected on the gradient of a quantity the defender can compute without the
teacher and that rises when extrapolation fails: :func:`effective_rank_of` (greedy low-rank
learning is what extrapolates, docs/science.md §3) or :func:`log_tail_energy` (the student's impulse
response beyond the training length blows up).

Baselines: per-example training loss and gradient norm, input norm; on features (an SSM's final
state, a classifier's penultimate layer): spectral signatures (Tran et al. 2018), activation
clustering (Chen et al. 2018), deep k-NN (Peri et al. 2020), written here in NumPy.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..core import metrics
from ..core.ssm import DiagonalSSM, powers

# --------------------------------------------------------------------------------------------
# theory-guided (teacher-student task)
# --------------------------------------------------------------------------------------------


def energy_tail(X, n_last: int) -> np.ndarray:
    """Share of ``sum_j u_j^2`` in the last ``n_last`` positions, per row. ``(N, L) -> (N,)``; a zero
    row scores 0."""
    X = np.asarray(X, float)
    total = (X**2).sum(1)
    tail = (X[:, X.shape[1] - n_last :] ** 2).sum(1)
    return np.where(total > 0, tail / np.where(total > 0, total, 1.0), 0.0)


def tail_window(L: int, frac: float = 1 / 3) -> int:
    """The number of last positions :func:`energy_tail` looks at: ``ceil(frac L)`` (at least 1)."""
    return max(1, math.ceil(frac * L - 1e-9))


@jax.jit
def gamma_contributions(residual, xi, X, n=None) -> jax.Array:
    """Per-example terms of docs/science.md §1's ``gamma^(l)``: ``c[n, l] = 2(l+1)/N residual_n xi_n u_{n, L-l-2}``,
    ``l = 0..L-2``. Shapes ``(N,), (N,), (N, L) -> (N, L-1)``; summed over ``n`` they give
    :func:`implicitbias.core.metrics.gamma_coefficients`. ``n`` overrides ``N`` (padding rows)."""
    X = jnp.asarray(X)
    N, L = X.shape
    N = N if n is None else n
    l = jnp.arange(L - 1)
    u = X[:, L - 2 - l]
    return 2.0 * (l + 1) / N * (jnp.asarray(residual) * jnp.asarray(xi))[:, None] * u


def nongreedy_share(X, n_powers: int = 2) -> np.ndarray:
    """Share of ``sum_l |c[n, l]|`` (:func:`gamma_contributions`) on the powers ``l < n_powers``.
    The residual and ``xi`` scale every ``l`` of one example alike, so the share depends on the
    input alone, ``sum_{l < n_powers} (l+1) |u_{L-l-2}| / sum_l (l+1) |u_{L-l-2}|``: ``(N, L) -> (N,)``
    in [0, 1]; a row that touches no ``gamma`` term (zero, or mass only at the last position, which
    meets ``h_1`` and no power of ``a``) scores 0."""
    X = np.asarray(X, float)
    L = X.shape[1]
    l = np.arange(L - 1)
    c = (l + 1) * np.abs(X[:, L - 2 - l])
    total = c.sum(1)
    low = c[:, :n_powers].sum(1)
    return np.where(total > 0, low / np.where(total > 0, total, 1.0), 0.0)


def gamma0_magnitude(model, X, y) -> np.ndarray:
    """``|c[n, 0]|`` of :func:`gamma_contributions` at ``model`` (a standalone SSM, ``xi = 1``):
    the example's part of ``gamma^(0)``, ``(2/N) |y_n - model(u_n)| |u_{n, L-2}|``. ``(N, L), (N,) -> (N,)``."""
    X = np.asarray(X, float)
    residual = np.asarray(y, float) - np.asarray(model(jnp.asarray(X)))
    return np.abs(2.0 / X.shape[0] * residual * X[:, -2])


# --------------------------------------------------------------------------------------------
# model-based scores on a standalone SSM
# --------------------------------------------------------------------------------------------


def as_diagonal(model) -> DiagonalSSM:
    """The diagonal SSM ``(a, B, C)`` of ``model`` (a :class:`DiagonalSSM` or a full-kernel one)."""
    return DiagonalSSM(jnp.asarray(model.a), jnp.asarray(model.B), jnp.asarray(model.C))


def _flat(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


@jax.jit
def per_example_grads(ssm: DiagonalSSM, X, y) -> jax.Array:
    """Gradient of ``(ssm(u_n) - y_n)^2`` with respect to ``(a, B, C)``, per example: ``(N, 3d)``."""
    g = jax.vmap(lambda u, t: jax.grad(lambda m: (m(u[None])[0] - t) ** 2)(ssm))(X, y)
    return jax.vmap(_flat)(g)


def loss_scores(model, X, y) -> np.ndarray:
    """Per-example squared error ``(model(u_n) - y_n)^2``. ``(N,)``."""
    return np.asarray((model(jnp.asarray(X)) - jnp.asarray(y)) ** 2)


def grad_norm_scores(model, X, y) -> np.ndarray:
    """Per-example gradient norm at ``model`` (a standalone SSM). ``(N,)``."""
    G = per_example_grads(as_diagonal(model), jnp.asarray(X), jnp.asarray(y))
    return np.asarray(jnp.linalg.norm(G, axis=1))


def effective_rank_of(ssm: DiagonalSSM) -> jax.Array:
    """docs/science.md §1's effective rank of ``a``: the defender's teacher-free sign of non-greedy learning."""
    return metrics.effective_rank(ssm.a)


@functools.cache
def log_tail_energy(L: int, horizon: int):
    """``ssm -> log mean_{k=L+1..horizon} h_k^2``: the student's response beyond the training
    length, which explodes when an entry of ``a`` leaves the unit interval (no teacher needed).
    Cached, so equal arguments give the same function (and one compiled :func:`influence_at`)."""

    def R(ssm: DiagonalSSM) -> jax.Array:
        h = ssm.impulse_response(horizon)[L:]
        return jnp.log(jnp.mean(h**2) + 1e-300)

    return R


@functools.partial(jax.jit, static_argnums=(3,))
def influence_at(checkpoints: DiagonalSSM, X, y, R) -> jax.Array:
    """``-g_n . grad R`` at every checkpoint: ``checkpoints`` stacked ``(K, d)`` per field, ``X: (N,
    L)``, ``y: (N,)`` -> ``(K, N)``. A GD step on example ``n`` alone changes ``R`` by this much per
    unit step, to first order (the TracIn term, Pruthi et al. 2020)."""

    def one(ssm):
        G = per_example_grads(ssm, X, y)
        return -(G @ _flat(jax.grad(R)(ssm)))

    return jax.vmap(one)(checkpoints)


def influence(checkpoints, X, y, R, normalize: bool = True) -> np.ndarray:
    """Influence of each example on ``R`` summed over ``checkpoints`` (a list of
    :class:`DiagonalSSM`). With ``normalize`` each checkpoint's vector over examples counts with
    unit norm (the run's gradients span orders of magnitude from a near-zero start; without it the
    last checkpoints decide). ``(N,)``; higher = the example pushes ``R`` up. Non-finite terms
    (an exploded student) count 0."""
    stacked = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *checkpoints)
    per = np.asarray(influence_at(stacked, jnp.asarray(X), jnp.asarray(y), R))
    per = np.where(np.isfinite(per), per, 0.0)
    if normalize:
        norm = np.linalg.norm(per, axis=1, keepdims=True)
        per = np.where(norm > 0, per / np.where(norm > 0, norm, 1.0), 0.0)
    return per.sum(0)


def final_states(ssm: DiagonalSSM, X) -> np.ndarray:
    """The SSM's state after reading each input, ``x_L = sum_k A^(k-1) B u_{L-k}``: ``(N, d)``;
    the output is ``C . x_L``, so this is the standalone SSM's penultimate representation."""
    X = jnp.asarray(X)
    P = powers(ssm.a, X.shape[1])  # (L, d): row k-1 holds a^(k-1)
    return np.asarray(X @ P[::-1] * ssm.B)


# --------------------------------------------------------------------------------------------
# feature-space baselines (any model; features F: (N, D), labels: (N,) ints)
# --------------------------------------------------------------------------------------------


def input_norm(X) -> np.ndarray:
    """``||u_n||``, flattened over every axis but the first. ``(N,)``."""
    X = np.asarray(X, float)
    return np.sqrt((X.reshape(X.shape[0], -1) ** 2).sum(1))


def spectral_signature(F, labels) -> np.ndarray:
    """Tran, Li, Madry 2018: per class, the squared projection of each centred feature vector on
    the top right singular vector of the class's centred feature matrix. ``(N, D), (N,) -> (N,)``."""
    F = np.asarray(F, float)
    out = np.zeros(F.shape[0])
    for idx, M, vt in _class_svds(F, labels, min_size=2):
        out[idx] = (M @ vt[0]) ** 2
    return out


def _class_svds(F, labels, min_size: int):
    """Per class with at least ``min_size`` members: ``(idx, M, vt)``, the class's rows, its centred
    feature matrix ``M`` ``(n_c, D)`` and the right singular vectors ``vt`` of ``M`` (rows)."""
    labels = np.asarray(labels)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if idx.size < min_size:
            continue
        M = F[idx] - F[idx].mean(0)
        _, _, vt = np.linalg.svd(M, full_matrices=False)
        yield idx, M, vt


def kmeans2(Z, iters: int = 100) -> np.ndarray:
    """Two-means (Lloyd) from a deterministic start: the point farthest from the mean and the point
    farthest from it. ``(n, D) -> (n,)`` cluster ids in {0, 1}."""
    Z = np.asarray(Z, float)
    c0 = Z[np.argmax(((Z - Z.mean(0)) ** 2).sum(1))]
    c1 = Z[np.argmax(((Z - c0) ** 2).sum(1))]
    centers = np.stack([c0, c1])
    assign = np.zeros(Z.shape[0], int)
    for _ in range(iters):
        d = ((Z[:, None, :] - centers[None]) ** 2).sum(-1)
        new = np.argmin(d, 1)
        if np.array_equal(new, assign) and _ > 0:
            break
        assign = new
        for k in (0, 1):
            if np.any(assign == k):
                centers[k] = Z[assign == k].mean(0)
    return assign


def activation_clustering(F, labels, n_components: int = 10, max_size: float = 0.35):
    """Chen et al. 2018: per class, features reduced to ``n_components`` principal directions and
    split in two by 2-means; the smaller cluster is poisoned if it holds at most ``max_size`` of the
    class (their relative-size criterion).

    Returns ``(scores, flags)``, each ``(N,)``: the score is the margin ``||z - c_big|| - ||z -
    c_small||`` (positive = closer to the smaller cluster; for the AUROC), the flags mark the
    members of a smaller cluster that passed the size test. (They reduce with ICA; PCA keeps this
    deterministic and dependency-free.)"""
    F = np.asarray(F, float)
    scores = np.zeros(F.shape[0])
    flags = np.zeros(F.shape[0], bool)
    for idx, M, vt in _class_svds(F, labels, min_size=3):
        Z = M @ vt[: min(n_components, vt.shape[0])].T
        assign = kmeans2(Z)
        sizes = np.bincount(assign, minlength=2)
        small = int(np.argmin(sizes))
        centers = np.stack([Z[assign == k].mean(0) if sizes[k] else np.zeros(Z.shape[1]) for k in (0, 1)])
        dist = np.sqrt(((Z[:, None, :] - centers[None]) ** 2).sum(-1))
        scores[idx] = dist[:, 1 - small] - dist[:, small]
        if 0 < sizes[small] <= max_size * idx.size:
            flags[idx] = assign == small
    return scores, flags


def deep_knn(F, labels, k: int = 10):
    """Peri et al. 2020: an example whose ``k`` nearest neighbours in feature space (itself left
    out) mostly carry another label is suspect. Returns ``(scores, flags)``: the score is the share
    of neighbours with another label, the flag says the plurality label of the neighbours is not
    the example's own (ties keep the own label). ``(N, D), (N,) -> (N,), (N,)``."""
    F = np.asarray(F, float)
    labels = np.asarray(labels)
    n = F.shape[0]
    k = min(k, n - 1)
    sq = (F**2).sum(1)
    D = sq[:, None] + sq[None, :] - 2 * F @ F.T
    np.fill_diagonal(D, np.inf)
    nn = np.argpartition(D, k - 1, axis=1)[:, :k]
    nl = labels[nn]
    scores = (nl != labels[:, None]).mean(1)
    flags = np.zeros(n, bool)
    classes = np.unique(labels)
    for i in range(n):
        counts = np.array([(nl[i] == c).sum() for c in classes])
        own = counts[np.searchsorted(classes, labels[i])]
        flags[i] = counts.max() > own
    return scores, flags


def tail_deviation(X, labels, last_frac: float, reference: str = "nearest") -> np.ndarray:
    """The theory's end-of-sequence signature for data with natural content everywhere: the share of
    ``||x_n - r_n||^2`` in the last ``ceil(last_frac L)`` positions, with ``r_n`` the nearest other
    example of the same label (``"nearest"``: a poison added beside its clean copy finds that copy)
    or the class mean (``"class_mean"``). ``X: (N, L, ...)`` -> ``(N,)``."""
    X = np.asarray(X, float)
    X = X.reshape(X.shape[0], X.shape[1], -1)
    labels = np.asarray(labels)
    L = X.shape[1]
    n_last = max(1, math.ceil(last_frac * L - 1e-9))
    flat = X.reshape(X.shape[0], -1)
    out = np.zeros(X.shape[0])
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if reference == "class_mean" or idx.size < 2:
            R = np.broadcast_to(X[idx].mean(0), X[idx].shape)
        else:
            Fc = flat[idx]
            sq = (Fc**2).sum(1)
            D = sq[:, None] + sq[None, :] - 2 * Fc @ Fc.T
            np.fill_diagonal(D, np.inf)
            R = X[idx][np.argmin(D, 1)]
        dev = ((X[idx] - R) ** 2).sum(-1)  # (n, L)
        total = dev.sum(1)
        out[idx] = np.where(total > 0, dev[:, L - n_last :].sum(1) / np.where(total > 0, total, 1.0), 0.0)
    return out
