"""Matrix sensing with a (non-linear) matrix factorization: Guess & Check vs gradient descent
(docs/science.md §5, "Guess & Check vs GD"; Alexander, Slutzky, Ran-Milo, Cohen, arXiv 2506.03931).

Every detail below was settled by reading the authors' code, ``YoniSlutzky98/nn-gd-gen-mf``
(it does not run as published: ``common/parser.py`` refuses the width configs, which list 8
G&C batch sizes for 6 widths):

* **Ground truth** (``common/utils/matrix_utils.py``, ``random_fixed_rank_matrix``):
  ``W* = U V`` with ``U (n_rows, r)``, ``V (r, n_cols)`` i.i.d. N(0, 1), scaled to Frobenius norm
  ``gt_norm`` (1).
* **Measurements** (``generate_data``): ``m`` matrices ``A_i`` with i.i.d. N(0, 1) entries, each
  scaled to unit Frobenius norm; ``b_i = <A_i, W*>``.
* **Complement basis** (``orthonormal_complement_basis``): an orthonormal basis ``B_j`` of the
  orthogonal complement of span{A_i} in ``R^(n_rows x n_cols)`` (``n_rows n_cols - rank`` matrices);
  theirs takes the last columns of a complete QR, ours the last left singular vectors (the same
  subspace; the loss below does not depend on which basis of it is used).
* **Losses** (``gnc_sensing_loss`` / ``gd_sensing_loss``): ``mean_i (<A_i, Y> - b_i)^2`` for training
  and ``mean_j (<B_j, Y> - <B_j, W*>)^2`` for generalisation (a mean, not a sum, over directions).
* **Model** (``common/models/matrix_factorization.py`` and ``train_gnc`` in ``common/training.py``):
  ``Y = act(... act(act(W_1) W_2) ...) W_depth`` with ``W_1 (n_rows, width)``, ``W_l (width, width)``,
  ``W_depth (width, n_cols)``; activation between layers, none after the last; no biases. Their GD
  model computes the transpose of the same form (``nn.Linear`` on the identity, then ``.t()``); the
  problem's distribution is the same under transposition, so one orientation serves both here.
* **G&C prior** (``train_gnc``): entries i.i.d. N(0, 1) (``gauss``) or U[-1, 1] (``unif``), every layer
  but the last divided by ``sqrt(width)`` (its fan-out), the last by ``sqrt(n_cols)``; optionally
  ``Y <- Y / (||Y||_F + softening)`` (``normalize``, softening 1e-6). A sample is accepted when its
  training loss is ``< eps_train`` (strict). "Chance" (their ``prior_gen_loss``) is the mean
  generalisation loss over *all* samples, fitted or not. With no accepted sample their G&C loss is
  1.0; ours is ``None`` with ``accepted = 0`` (1.0 is not a loss G&C attained).
* **GD** (``train_gd``): PyTorch's default ``nn.Linear`` init ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
  times ``init_scale``, full-batch ``GroupRMSprop`` (``common/models/group_rmsprop.py``; see
  :func:`implicitbias.core.optim.group_rmsprop`) for a fixed number of epochs; its loss is the final
  generalisation loss. Their ``momentum`` option is computed and then not applied (the update uses
  the raw gradient), so it is not offered here.

Closed form of chance (tested): for a linear network the prior's ``Y`` has mean 0 and covariance
``sigma^2 I`` with ``sigma^2 = v^depth / n_cols`` (``v`` = the base distribution's variance: 1 for
``gauss``, 1/3 for ``unif``); normalised and Gaussian, ``Y / ||Y||`` is invariant under ``Y -> U Y V``
(orthogonal ``U``, ``V``), so its covariance is ``I / (n_rows n_cols)``. Either way chance
``= sigma^2 + mean_j <B_j, W*>^2`` (:func:`chance_closed_form`).

**The samplers** (``Config.sampler``; :mod:`implicitbias.tasks.gc_samplers` derives the Bartlett
identity and defines the NumPy samplers' streams): ``"direct-jax"`` (this module's :func:`gc_chunk`,
every run stored before the field existed), ``"direct"`` (the same prior in NumPy, at the machine's
normal-draw limit), ``"bartlett"`` (exact and width-free for the linear Gaussian prior), ``"auto"``
(bartlett where exact and width > n_rows, else direct; the default). Each is a different random stream.

**The JAX sampler** (``"direct-jax"``). Sample ``i`` of a run draws all its weights from
``fold_in(key, i)``, so what sample ``i`` is does not depend on how samples are grouped. Sums over
samples are taken in fixed blocks of :data:`BLOCK` samples, each summed by a fixed pairwise tree of
element-wise additions, and the block sums are added one after another in sample order; a chunk (one
compiled call, the memory bound) is a whole number of blocks. Counts, sums and minima are therefore
bit-identical for every chunk size (tested). The NumPy samplers keep the same property with their own
per-block streams (:mod:`~implicitbias.tasks.gc_samplers`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core import progress
from ..core.optim import StopRule, make_optimizer
from ..core.train import train_batched
from ..core.validate import described, require, require_choices, require_finite, require_seeds
from . import gc_samplers

ACTIVATIONS = ("linear", "tanh", "leaky_relu")
PRIORS = ("gauss", "unif")
BLOCK = gc_samplers.BLOCK  # samples per block (one compiled loop body; the numbers depend on it, so it is fixed)
SAMPLERS = gc_samplers.CONFIG_SAMPLERS  # Config.sampler's choices ("auto" resolves to one of gc_samplers.SAMPLERS)
PRIOR_VARIANCE = {"gauss": 1.0, "unif": 1.0 / 3.0}


# --------------------------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------------------------


class Problem(NamedTuple):
    """One matrix-sensing instance (a leading seed axis where batched).

    ``W_star (n_rows, n_cols)``; ``A (m, n_rows, n_cols)`` unit-norm measurements, ``b (m,)``;
    ``B (k, n_rows, n_cols)`` orthonormal basis of span{A_i}'s complement, ``b_test (k,) = <B_j, W*>``.
    """

    W_star: jax.Array
    A: jax.Array
    b: jax.Array
    B: jax.Array
    b_test: jax.Array


def complement_basis(A: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis ``(n_rows n_cols - rank, n_rows, n_cols)`` of the orthogonal complement of
    span{A_i} (``A (m, n_rows, n_cols)``), from the SVD of the ``(n_rows n_cols, m)`` matrix of
    flattened ``A_i`` (singular values ``<= tol * largest`` count as zero)."""
    A = np.asarray(A, np.float64)
    m, r, c = A.shape
    U, s, _ = np.linalg.svd(A.reshape(m, r * c).T, full_matrices=True)
    rank = int(np.sum(s > tol * s.max())) if s.size else 0
    return U[:, rank:].T.reshape(r * c - rank, r, c)


def make_problem(seed: int, n_rows: int = 5, n_cols: int = 5, rank: int = 1, n_measurements: int = 15,
                 gt_norm: float = 1.0) -> Problem:
    """The instance of ``seed`` (``matrix_utils.generate_data``): ``W*`` from ``fold_in(key, 0)``, the
    measurements from ``fold_in(key, 1)`` with ``key = PRNGKey(seed)``; float64."""
    key = jax.random.PRNGKey(seed)
    ku, kv = jax.random.split(jax.random.fold_in(key, 0))
    U = jax.random.normal(ku, (n_rows, rank), jnp.float64)
    V = jax.random.normal(kv, (rank, n_cols), jnp.float64)
    W = np.asarray(U @ V)
    W = W * (gt_norm / np.linalg.norm(W))
    A = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (n_measurements, n_rows, n_cols), jnp.float64))
    A = A / np.linalg.norm(A, axis=(1, 2), keepdims=True)
    B = complement_basis(A)
    return Problem(*(jnp.asarray(x) for x in (W, A, np.einsum("mrc,rc->m", A, W), B, np.einsum("krc,rc->k", B, W))))


def stack_problems(problems: list[Problem]) -> Problem:
    """One :class:`Problem` with a leading seed axis (all must share shapes)."""
    return Problem(*(jnp.stack(xs) for xs in zip(*problems)))


def sensing_loss(Y: jax.Array, A: jax.Array, b: jax.Array) -> jax.Array:
    """``mean_i (<A_i, Y> - b_i)^2`` for ``Y (..., r, c)``, ``A (m, r, c)``, ``b (m,)`` -> ``(...)``."""
    preds = jnp.einsum("...rc,mrc->...m", Y, A)
    return jnp.mean((preds - b) ** 2, axis=-1)


def generalisation_loss(Y: jax.Array, p: Problem) -> jax.Array:
    """``mean_j (<B_j, Y> - <B_j, W*>)^2`` over the complement basis (``Y (..., r, c)`` -> ``(...)``)."""
    return sensing_loss(Y, p.B, p.b_test)


# --------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------


def layer_shapes(n_rows: int, n_cols: int, width: int, depth: int) -> list[tuple[int, int]]:
    """``[(n_rows, width), (width, width) x (depth - 2), (width, n_cols)]`` (``depth >= 2``)."""
    return [(n_rows, width)] + [(width, width)] * (depth - 2) + [(width, n_cols)]


def activation_fn(name: str, negative_slope: float = 0.2):
    if name == "linear":
        return lambda x: x
    if name == "tanh":
        return jnp.tanh
    if name == "leaky_relu":
        return lambda x: jnp.where(x >= 0, x, negative_slope * x)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def forward(weights, activation: str, negative_slope: float = 0.2) -> jax.Array:
    """``Y = act(... act(act(W_1) W_2) ...) W_depth`` (``weights`` a list of ``(..., a, b)`` arrays,
    optional leading batch axes); ``act(W_1)`` is ``act(I W_1)``, the network applied to the identity."""
    act = activation_fn(activation, negative_slope)
    Y = act(weights[0])
    for W in weights[1:-1]:
        Y = act(Y @ W)
    return Y @ weights[-1]


# --------------------------------------------------------------------------------------------
# Guess & Check
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GCSpec:
    """Everything static about a G&C run (hashable: one compiled chunk per spec and chunk size)."""

    n_rows: int
    n_cols: int
    width: int
    depth: int
    activation: Literal["linear", "tanh", "leaky_relu"] = "linear"
    negative_slope: float = 0.2
    prior: Literal["gauss", "unif"] = "gauss"
    normalize: bool = False
    softening: float = 1e-6
    eps_train: float = 0.02
    # which stream draws the prior (gc_samplers): the JAX sampler unless asked (Config resolves "auto")
    sampler: Literal["direct-jax", "direct", "bartlett"] = "direct-jax"

    def __post_init__(self):
        if self.sampler not in gc_samplers.SAMPLERS:
            raise ValueError(f"GCSpec.sampler must be one of {gc_samplers.SAMPLERS}, got {self.sampler!r}")
        gc_samplers.resolve_sampler(self.sampler, self)  # "bartlett" where it is not exact: ValueError

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return layer_shapes(self.n_rows, self.n_cols, self.width, self.depth)

    @property
    def n_params(self) -> int:
        return sum(a * b for a, b in self.shapes)

    @property
    def scales(self) -> list[float]:
        """``1/sqrt(width)`` for every layer but the last, ``1/sqrt(n_cols)`` for it (``train_gnc``)."""
        return [1 / math.sqrt(self.width)] * (self.depth - 1) + [1 / math.sqrt(self.n_cols)]


def raw_draws(key: jax.Array, prior: str, n: int) -> jax.Array:
    """The ``n`` unscaled prior numbers of one sample: N(0, 1) or U[-1, 1), float64."""
    if prior == "gauss":
        return jax.random.normal(key, (n,), jnp.float64)
    return jax.random.uniform(key, (n,), jnp.float64, -1.0, 1.0)


def weights_from_draws(draws, spec: GCSpec) -> list:
    """Split ``(..., n_params)`` raw draws into the scaled layers (row-major, layer by layer)."""
    out, at = [], 0
    for (a, b), s in zip(spec.shapes, spec.scales):
        out.append(draws[..., at:at + a * b].reshape(draws.shape[:-1] + (a, b)) * s)
        at += a * b
    return out


def sample_draws(key: jax.Array, spec: GCSpec, indices) -> jax.Array:
    """``(len(indices), n_params)`` raw draws of the samples ``indices``: sample ``i`` from ``fold_in(key, i)``."""
    idx = jnp.asarray(indices, jnp.uint32)
    return jax.vmap(lambda i: raw_draws(jax.random.fold_in(key, i), spec.prior, spec.n_params))(idx)


def sample_losses(draws, p: Problem, spec: GCSpec):
    """``(train, gen)`` losses of the networks of ``draws (N, n_params)``, each ``(N,)``."""
    Y = forward(weights_from_draws(draws, spec), spec.activation, spec.negative_slope)
    if spec.normalize:
        Y = Y / (jnp.linalg.norm(Y, axis=(-2, -1), keepdims=True) + spec.softening)
    return sensing_loss(Y, p.A, p.b), generalisation_loss(Y, p)


class GCState(NamedTuple):
    """Running totals of one G&C run (scalars): accepted count, sums of the accepted samples'
    generalisation losses and of their squares, sum over all samples (chance), least training loss."""

    accepted: jax.Array
    gen_sum: jax.Array
    gen_sq_sum: jax.Array
    prior_sum: jax.Array
    min_train: jax.Array

    @staticmethod
    def zero() -> GCState:
        z = jnp.zeros((), jnp.float64)
        return GCState(jnp.zeros((), jnp.int64), z, z, z, jnp.full((), jnp.inf, jnp.float64))


def _tree_sum(x: jax.Array) -> jax.Array:
    """Sum of a ``(BLOCK,)`` vector by halving with element-wise adds: a fixed order of additions
    (an XLA reduction may regroup them with the surrounding program)."""
    while x.shape[0] > 1:
        h = x.shape[0] // 2
        x = x[:h] + x[h:]
    return x[0]


@functools.partial(jax.jit, static_argnames=("net",))
def gc_chunk(state: GCState, key: jax.Array, start: jax.Array, n_blocks: jax.Array, samples: jax.Array,
             eps_train: jax.Array, p: Problem, net: GCSpec) -> GCState:
    """Add samples ``start .. start + n_blocks BLOCK - 1`` (those ``< samples``) to ``state``, one
    block of :data:`BLOCK` samples after another; accepted: training loss ``< eps_train``. Every block
    is the same computation of the same shapes (the loop's body), so a sample's losses do not depend
    on the chunk (a vmap over the whole chunk does: XLA's batched kernels round differently with the
    batch size). ``net``'s own ``eps_train`` is not read; the chunk length and the threshold are data,
    so one compiled program serves every chunk size and threshold of a network."""

    def block(b, state: GCState) -> GCState:
        idx = start + b * BLOCK + jnp.arange(BLOCK, dtype=jnp.int64)
        valid = idx < samples
        train, gen = sample_losses(sample_draws(key, net, idx), p, net)
        ok = valid & (train < eps_train)
        zero = jnp.zeros_like(gen)
        acc = jnp.where(ok, gen, zero)
        return GCState(
            state.accepted + jnp.sum(ok.astype(jnp.int64)),
            state.gen_sum + _tree_sum(acc),
            state.gen_sq_sum + _tree_sum(acc * acc),
            state.prior_sum + _tree_sum(jnp.where(valid, gen, zero)),
            jnp.minimum(state.min_train, jnp.min(jnp.where(valid, train, jnp.inf))),
        )

    return jax.lax.fori_loop(jnp.zeros((), jnp.int64), n_blocks.astype(jnp.int64), block, state)


def auto_chunk(spec: GCSpec, draw_bytes: float = 32e6) -> int:
    """Samples per compiled call holding about ``draw_bytes`` of raw float64 draws (a multiple of BLOCK;
    the NumPy samplers: samples between progress reports, 64 blocks)."""
    if spec.sampler != "direct-jax":
        return 64 * BLOCK
    return max(BLOCK, int(draw_bytes / (8 * spec.n_params) // BLOCK) * BLOCK)


@dataclass(frozen=True)
class SamplerProgress:
    """One report of :func:`guess_and_check` over all seeds of a run (``describe()`` for the CLI)."""

    samples: int  # drawn so far, all seeds
    total: int  # to draw, all seeds
    accepted: int  # so far, all seeds
    seed_index: int
    seeds: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        eta = (self.total - self.samples) / self.rate if self.rate > 0 else None
        text = (f"G&C samples {self.samples:,}/{self.total:,} · seed {self.seed_index + 1}/{self.seeds} · "
                f"{self.accepted:,} accepted · {self.rate:,.0f} samples/s")
        return text + (f" · ETA {eta:,.0f} s" if eta is not None else "")


class GCResult(NamedTuple):
    """Per seed (NumPy, shape ``(S,)``): accepted count, mean (and std) generalisation loss of the
    accepted samples (NaN where none), chance (mean over all samples), least training loss."""

    accepted: np.ndarray
    gen_mean: np.ndarray
    gen_std: np.ndarray
    chance: np.ndarray
    min_train: np.ndarray


def summarise(states: list[GCState], samples: int) -> GCResult:
    acc = np.array([int(s.accepted) for s in states])
    gsum = np.array([float(s.gen_sum) for s in states])
    gsq = np.array([float(s.gen_sq_sum) for s in states])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(acc > 0, gsum / np.maximum(acc, 1), np.nan)
        var = np.where(acc > 0, gsq / np.maximum(acc, 1) - mean**2, np.nan)
    return GCResult(acc, mean, np.sqrt(np.maximum(var, 0.0)),
                    np.array([float(s.prior_sum) for s in states]) / samples,
                    np.array([float(s.min_train) for s in states]))


def guess_and_check(keys: list[jax.Array], problems: list[Problem], spec: GCSpec, samples: int,
                    chunk: int = 0, threads: int = 0) -> GCResult:
    """G&C for each (key, problem) pair (one per seed): ``samples`` prior draws each from
    ``spec.sampler``, evaluated ``chunk`` at a time (0: :func:`auto_chunk`), reporting
    :class:`SamplerProgress` after each chunk while someone listens. The NumPy samplers (``"direct"``,
    ``"bartlett"``) run on ``threads`` threads (0: every core this process may use). The numbers do
    not depend on ``chunk`` or ``threads`` (module docstring)."""
    chunk = chunk or auto_chunk(spec)
    if chunk % BLOCK:
        raise ValueError(f"chunk must be a multiple of {BLOCK}, got {chunk}")
    if samples >= 2**32:
        raise ValueError(f"samples must be < 2^32 (sample indices are folded into the key), got {samples}")
    if spec.sampler != "direct-jax":
        return _numpy_guess_and_check(keys, problems, spec, samples, chunk, threads)
    n_chunks = math.ceil(samples / chunk)
    listened = progress.listened()
    net, eps = dataclasses.replace(spec, eps_train=0.0), jnp.asarray(spec.eps_train, jnp.float64)
    t0, states, accepted = time.perf_counter(), [], 0
    for s, (key, p) in enumerate(zip(keys, problems)):
        state = GCState.zero()
        for c in range(n_chunks):
            state = gc_chunk(state, key, jnp.asarray(c * chunk, jnp.int64), jnp.asarray(chunk // BLOCK, jnp.int64),
                             jnp.asarray(samples, jnp.int64), eps, p, net)
            if listened:
                progress.report(SamplerProgress(s * samples + min((c + 1) * chunk, samples), samples * len(keys),
                                                accepted + int(state.accepted), s, len(keys),
                                                time.perf_counter() - t0))
        accepted += int(state.accepted)
        states.append(state)
    return summarise(states, samples)


def _numpy_guess_and_check(keys, problems, spec: GCSpec, samples: int, chunk: int, threads: int) -> GCResult:
    """:func:`guess_and_check` with the NumPy samplers: block sums in block order (``gc_samplers``)."""
    listened = progress.listened()
    t0, states, accepted, every = time.perf_counter(), [], 0, chunk // BLOCK
    n_blocks = -(-samples // BLOCK)
    for s, (key, p) in enumerate(zip(keys, problems)):
        acc, gsum, gsq, psum, mtrain = 0, 0.0, 0.0, 0.0, math.inf
        stats = gc_samplers.iter_block_stats(key, 0, n_blocks, samples, spec.eps_train, gc_samplers.NumpyProblem.of(p),
                                             spec, spec.sampler, threads)
        for j, b in enumerate(stats):
            acc, gsum, gsq, psum = acc + b.accepted, gsum + b.gen_sum, gsq + b.gen_sq_sum, psum + b.prior_sum
            mtrain = min(mtrain, b.min_train)
            if listened and ((j + 1) % every == 0 or j + 1 == n_blocks):
                progress.report(SamplerProgress(s * samples + min((j + 1) * BLOCK, samples), samples * len(keys),
                                                accepted + acc, s, len(keys), time.perf_counter() - t0))
        accepted += acc
        states.append(GCState(acc, gsum, gsq, psum, mtrain))
    return summarise(states, samples)


def numpy_guess_and_check(draws: np.ndarray, p: Problem, spec: GCSpec) -> tuple[int, float, float, float]:
    """The same sampler in plain NumPy on given raw draws ``(N, n_params)`` (an independent reference
    for tests and the benchmark): ``(accepted, sum of accepted gen losses, sum of all gen losses,
    least training loss)``."""
    draws = np.asarray(draws, np.float64)
    Ws, at = [], 0
    for (a, b), s in zip(spec.shapes, spec.scales):
        Ws.append(draws[:, at:at + a * b].reshape(-1, a, b) * s)
        at += a * b
    if spec.activation == "linear":
        act = lambda x: x
    elif spec.activation == "tanh":
        act = np.tanh
    else:
        act = lambda x: np.where(x >= 0, x, spec.negative_slope * x)
    Y = act(Ws[0])
    for W in Ws[1:-1]:
        Y = act(np.matmul(Y, W))
    Y = np.matmul(Y, Ws[-1])
    if spec.normalize:
        Y = Y / (np.sqrt(np.sum(Y * Y, axis=(1, 2), keepdims=True)) + spec.softening)
    flat = Y.reshape(len(Y), -1)
    A, B = np.asarray(p.A).reshape(len(p.A), -1), np.asarray(p.B).reshape(len(p.B), -1)
    train = np.mean((flat @ A.T - np.asarray(p.b)) ** 2, axis=1)
    gen = np.mean((flat @ B.T - np.asarray(p.b_test)) ** 2, axis=1)
    ok = train < spec.eps_train
    return int(ok.sum()), float(gen[ok].sum()), float(gen.sum()), float(train.min())


def chance_closed_form(p: Problem, spec: GCSpec) -> float:
    """Chance for a linear network (module docstring): ``sigma^2 + mean_j <B_j, W*>^2`` with
    ``sigma^2 = v^depth / n_cols`` unnormalised, ``1 / (n_rows n_cols)`` normalised (Gaussian prior;
    the softening is neglected)."""
    if spec.activation != "linear" or (spec.normalize and spec.prior != "gauss"):
        raise ValueError("the closed form holds for linear networks (normalised: Gaussian prior only)")
    if spec.normalize:
        sigma2 = 1 / (spec.n_rows * spec.n_cols)
    else:
        sigma2 = PRIOR_VARIANCE[spec.prior] ** spec.depth / spec.n_cols
    return float(sigma2 + np.mean(np.asarray(p.b_test) ** 2))


# --------------------------------------------------------------------------------------------
# gradient descent
# --------------------------------------------------------------------------------------------


def gd_init(key: jax.Array, shapes: list[tuple[int, int]], init_scale: float) -> list[jax.Array]:
    """PyTorch's default ``nn.Linear`` init, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, times ``init_scale``
    (``near_zero_init``); layer ``l`` from ``fold_in(key, l)``."""
    return [init_scale * jax.random.uniform(jax.random.fold_in(key, l), s, jnp.float64, -1.0, 1.0) / math.sqrt(s[0])
            for l, s in enumerate(shapes)]


@functools.cache
def _gd_fns(activation: str, negative_slope: float):
    """``(loss_fn, log_fn)`` for the training loop, cached so compiled loops are reused."""

    def loss_fn(params, p: Problem):
        return sensing_loss(forward(params, activation, negative_slope), p.A, p.b)

    def log_fn(params, p: Problem):
        Y = forward(params, activation, negative_slope)
        return {"train": sensing_loss(Y, p.A, p.b), "gen": generalisation_loss(Y, p)}

    return loss_fn, log_fn


GD_OPTIMIZERS = ("group_rmsprop", "gd")  # of implicitbias.core.optim.make_optimizer's registry


class GDResult(NamedTuple):
    """Per seed (NumPy ``(S,)``): final generalisation and training losses, diverged flags, and the
    logged curves ``(S, rows)`` (NaN past a run's end)."""

    gen: np.ndarray
    train: np.ndarray
    diverged: np.ndarray
    log_steps: np.ndarray
    gen_curve: np.ndarray
    train_curve: np.ndarray


def gradient_descent(keys: list[jax.Array], problems: list[Problem], shapes: list[tuple[int, int]], activation: str,
                     negative_slope: float, init_scale: float, optimizer: str, lr: float, epochs: int,
                     log_every: int) -> GDResult:
    """Full-batch training of every seed's network for ``epochs`` updates, all seeds in one
    compiled loop (:func:`implicitbias.core.train.train_batched`); a non-finite loss stops a seed."""
    params = [jnp.stack(ws) for ws in zip(*(gd_init(k, shapes, init_scale) for k in keys))]
    data = stack_problems(problems)
    loss_fn, log_fn = _gd_fns(activation, negative_slope)
    # a fixed number of updates, as train_gd: a loss threshold that is never reached
    rule = StopRule(eps=np.finfo(np.float64).tiny, extra_steps=0, max_steps=epochs)
    res = train_batched(loss_fn, params, data, make_optimizer(optimizer, lr), rule, log_every, log_fn)
    Y = jax.vmap(lambda ws: forward(ws, activation, negative_slope))(res.params)
    return GDResult(np.asarray(jax.vmap(generalisation_loss)(Y, data)), np.asarray(res.final_loss),
                    np.asarray(res.diverged), np.asarray(res.log_steps), np.asarray(res.logs["gen"]),
                    np.asarray(res.logs["train"]))


# The run's config (implicitbias.experiments.gc_vs_gd presets it; docs/science.md §4)


@dataclass(frozen=True)
class Config:
    """One sweep point: the problem, the network, the G&C budget and GD's schedule."""

    width: int = field(metadata={"help": "hidden width of the factorised network (integer >= 1)"})
    depth: int = field(metadata={"help": "number of weight matrices (layers) of the network (integer >= 2)"})
    seeds: tuple[int, ...] = described(
        (0, 1, 2, 3, 4, 5, 6, 7), "seeds, one problem (ground truth, measurements) and one G&C and GD run each")
    n_rows: int = described(5, "rows of the ground-truth matrix W*")
    n_cols: int = described(5, "columns of the ground-truth matrix W*")
    rank: int = described(1, "rank of the ground-truth matrix W* (<= min(n_rows, n_cols))")
    n_measurements: int = described(
        15, "number of unit-norm Gaussian measurements <A_i, W*> (< n_rows * n_cols)")
    gt_norm: float = described(1.0, "Frobenius norm of the ground-truth matrix W*")
    activation: Literal["linear", "tanh", "leaky_relu"] = described(
        "linear", "activation between layers (none after the last): 'linear', 'tanh' or 'leaky_relu'")
    negative_slope: float = described(0.2, "slope of leaky_relu for negative inputs")
    prior: Literal["gauss", "unif"] = described(
        "gauss", "G&C prior of the weight entries: 'gauss' (N(0, 1)) or 'unif' (U[-1, 1]), scaled by fan-out")
    normalize: bool = described(False, "G&C divides the network's output matrix Y by ||Y||_F + softening")
    softening: float = described(1e-6, "added to ||Y||_F when normalize is on (>= 0)")
    eps_train: float = described(0.02, "G&C accepts a sample whose training loss is < eps_train")
    samples: int = described(200_000, "G&C draws from the prior per seed (1..2^32-1)")
    chunk: int = described(
        0, "G&C draws per compiled call, a multiple of 1024 (memory bound; numbers do not depend on it); "
           "0: ~32 MB of draws")
    sampler: Literal["auto", "direct", "bartlett", "direct-jax"] = described(
        "auto", "G&C prior sampler (each its own random stream): 'bartlett' (exact for linear + gauss, width >= "
                "n_rows), 'direct' (NumPy), 'direct-jax' (the runs stored before this field), 'auto' (bartlett "
                "where exact and width > n_rows, else direct)")
    gd_optimizer: Literal["group_rmsprop", "gd"] = described(
        "group_rmsprop", "GD's optimiser: 'group_rmsprop' (the authors' GroupRMSprop) or 'gd' (plain gradient descent)")
    gd_lr: float = described(1e-4, "GD's learning rate")
    gd_epochs: int = described(100_000, "GD's full-batch training epochs")
    gd_init_scale: float = described(1e-3, "factor on PyTorch's default nn.Linear initialisation of GD's weights")
    gd_log_every: int = described(100, "epochs between the logged GD losses (the curves)")

    def __post_init__(self):
        require_choices(self)
        require_seeds(self.seeds)
        require(all(s < 2**32 for s in self.seeds), f"seeds must be integers in 0..2^32-1, got {self.seeds}")
        for name in ("width", "n_rows", "n_cols", "rank", "n_measurements", "gd_epochs", "gd_log_every"):
            v = getattr(self, name)
            require(type(v) is int and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        require(type(self.depth) is int and self.depth >= 2, f"depth must be an integer >= 2, got {self.depth!r}")
        require(self.rank <= min(self.n_rows, self.n_cols),
                f"rank must be <= min(n_rows, n_cols) = {min(self.n_rows, self.n_cols)}, got {self.rank}")
        require(self.n_measurements < self.n_rows * self.n_cols,
                f"n_measurements must be < n_rows * n_cols = {self.n_rows * self.n_cols} (the generalisation "
                f"loss lives on the complement), got {self.n_measurements}")
        require(type(self.normalize) is bool, f"normalize must be true or false, got {self.normalize!r}")
        for name in ("gt_norm", "negative_slope", "softening", "eps_train", "gd_lr", "gd_init_scale"):
            require_finite(name, getattr(self, name))
        for name in ("gt_norm", "eps_train", "gd_lr", "gd_init_scale"):
            require(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        require(self.softening >= 0, f"softening must be >= 0, got {self.softening}")
        require(type(self.samples) is int and 1 <= self.samples < 2**32,
                f"samples must be an integer in 1..2^32-1 (sample indices are folded into the key), "
                f"got {self.samples!r}")
        require(type(self.chunk) is int and self.chunk >= 0 and self.chunk % BLOCK == 0,
                f"chunk must be 0 (auto) or a positive multiple of {BLOCK}, got {self.chunk!r}")
        self.resolved_sampler  # noqa: B018 - "bartlett" where it is not exact: ValueError naming the reason

    @property
    def resolved_sampler(self) -> str:
        """The sampler a run uses: ``sampler``, with ``"auto"`` resolved (``gc_samplers.resolve_sampler``)."""
        return gc_samplers.resolve_sampler(self.sampler, self._spec("direct-jax"))

    def _spec(self, sampler: str) -> GCSpec:
        return GCSpec(self.n_rows, self.n_cols, self.width, self.depth, self.activation, self.negative_slope,
                      self.prior, self.normalize, self.softening, self.eps_train, sampler)

    def gc_spec(self) -> GCSpec:
        return self._spec(self.resolved_sampler)


def footprint_terms(c: Config) -> dict[str, int]:
    """The largest arrays of a run (:mod:`implicitbias.runtime.footprint`'s hook; a lower bound): one block of
    G&C draws with the layer outputs of its networks, and GD's parameters, gradients, optimiser state
    and logged curves for every seed."""
    spec = c.gc_spec()
    S, f8 = len(c.seeds), 8
    rows = -(-c.gd_epochs // c.gd_log_every) + 1
    if spec.sampler == "direct-jax":
        gc = (f"G&C draws and layer outputs of one block of {BLOCK} networks, {spec.n_params} weights each",
              BLOCK * (spec.n_params + c.depth * c.n_rows * c.width) * f8)
    elif spec.sampler == "direct":
        k, t = gc_samplers.sub_block(spec), gc_samplers.default_threads()
        gc = (f"G&C draws of {k} networks ({spec.n_params} weights each) and one block's outputs, x {t} threads",
              t * (k * (spec.n_params + c.n_rows * c.width) + 4 * BLOCK * c.n_rows * c.n_cols) * f8)
    else:
        t = gc_samplers.default_threads()
        gc = (f"G&C Bartlett factors and outputs of one block of {BLOCK} networks, x {t} threads",
              t * BLOCK * (3 * c.n_rows * c.n_rows + 4 * c.n_rows * c.n_cols) * f8)
    return {
        gc[0]: gc[1],
        f"GD weights, gradients and updates, {spec.n_params} weights x {S} seeds": 3 * S * spec.n_params * f8,
        f"GD curves of {rows} rows (gd_epochs / gd_log_every) x {S} seeds": S * rows * (2 * f8 + 4),
    }


def footprint_bytes(config: Config) -> int:
    """Bytes the largest arrays of a run of ``config`` take (see :func:`footprint_terms`)."""
    return int(sum(footprint_terms(config).values()))

