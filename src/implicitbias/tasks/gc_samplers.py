"""Samplers of the Guess & Check prior (docs/science.md §5): which network outputs ``Y`` a
G&C run draws, and how fast. The task, the losses and the acceptance rule are
:mod:`implicitbias.tasks.matrix_sensing`; ``Config.sampler`` picks one of:

* ``"direct-jax"``: the original JAX sampler (``matrix_sensing.gc_chunk``): sample ``i`` draws all its
  weights from ``fold_in(key, i)`` (float64 Threefry normals), then runs the network. Every run stored
  before the ``sampler`` field existed used this stream, so it is kept to reproduce them (and it is the
  one that runs on an accelerator); on a CPU it draws ~30 M normals/s per core, about a quarter of the
  machine's limit (below).
* ``"direct"``: the same prior drawn directly in NumPy, block by block (below), then the same network;
  exact for every config (tanh, leaky ReLU, the uniform prior). Its cost is the draws: at the widths
  of the sweeps it runs within 2x of the machine's normal-draw limit (``benchmarks/bench_gc.py``).
* ``"bartlett"``: exact and width-free for the *linear* network with the *Gaussian* prior, from the
  identity below; refused (``ValueError``) where it is not exact.
* ``"auto"`` (the config's default): the fastest exact one, ``"bartlett"`` where it is exact (linear,
  Gaussian, ``width >= n_rows``) and ``width > n_rows``, ``"direct"`` everywhere else
  (:func:`resolve_sampler`). At ``width == n_rows`` (the depth sweep's width 5) the Bartlett factor
  holds as many random numbers as the layer it replaces (``n(n+1)/2`` chi-square degrees of freedom
  plus ``n(n-1)/2`` normals ``= n^2``), its chi-square draws cost more than normals, and direct was
  measured 13-15% (depth 2) and 29-34% (depth 10) faster (docs/findings/gc_vs_gd.md);
  ``"bartlett"`` can still be asked for there. Every sampler is a different random stream: the same
  config gives other (equally distributed) numbers under each.

**The identity.** The prior's linear network is ``Y = c G_1 G_2 ... G_D`` with ``G_1 (n, w)``,
``G_l (w, w)`` for ``2 <= l <= D-1``, ``G_D (w, n_cols)`` all i.i.d. N(0, 1), ``n = n_rows``, ``w`` the
width, ``D`` the depth, and ``c = w^(-(D-1)/2) n_cols^(-1/2)`` (every layer but the last divided by
``sqrt(w)``, the last by ``sqrt(n_cols)``; ``train_gnc``). For ``w >= n``:

    G_1 G_2 ... G_D  =(in law)=  L_1 L_2 ... L_(D-1) Z,

``L_l`` i.i.d. Bartlett factors of a Wishart_n(w, I_n) -- ``n x n`` lower triangular with independent
entries, ``L_ii = sqrt(chi^2_(w-i+1))`` for ``i = 1..n`` (``w, w-1, ..., w-n+1`` degrees of freedom)
and ``L_ij ~ N(0, 1)`` for ``i > j`` -- and ``Z (n, n_cols)`` i.i.d. N(0, 1), all independent. Proof,
by induction over the layers: let ``M_1 = G_1``, an ``n x w`` standard Gaussian matrix. Its LQ
decomposition ``M_l = L_l Q_l`` (``L_l`` lower triangular with positive diagonal, ``Q_l (n, w)`` with
orthonormal rows) has ``L_l L_l^T = M_l M_l^T ~ Wishart_n(w, I)``, so ``L_l`` is that Wishart's
Bartlett factor (the law above), and ``Q_l`` is Haar-distributed on the Stiefel manifold and
independent of ``L_l``. Given ``Q_l``, each column of ``Q_l G_(l+1)`` is ``N(0, Q_l Q_l^T) = N(0, I_n)``
and the columns are independent: ``M_(l+1) = Q_l G_(l+1)`` is again an ``n x w`` (for ``l + 1 = D``:
``n x n_cols``) standard Gaussian matrix, independent of ``L_1 .. L_l``, so ``M_l G_(l+1) = L_l M_(l+1)``
and the product telescopes to ``L_1 ... L_(D-1) M_D`` with ``Z = M_D``. Every Wishart is ``n x n``
(``n_rows``: 5 here, the rows of the end-to-end ``n_rows x n_cols`` matrix) with ``w`` degrees of
freedom, one per hidden layer (``D - 1`` in all). A width-``w`` sample of depth ``D`` then costs
``(D-1) n`` chi-square and ``(D-1) n (n-1)/2 + n n_cols`` normal draws instead of
``n w + (D-2) w^2 + w n_cols``. Normalisation (``Y / (||Y||_F + softening)``, the depth sweep) is a
function of ``Y``, so it is applied after the product, with ``c`` kept exactly (the softening sees the
scale).

*Where it does not hold.* ``w < n``: ``M_1 M_1^T`` is a singular Wishart (rank ``w``) with no Bartlett
factor of this form; ``"bartlett"`` is refused there and ``"auto"`` falls back to ``"direct"``. An
activation between the layers (tanh, leaky ReLU) breaks the telescoping product; the uniform prior is
not rotation invariant (``Q_l G_(l+1)`` is not uniform). Both are refused.

**Moments (tested).** For ``T = X X^T`` of ``X = G_1 .. G_l`` and one more layer ``G (a, b)``,
``T' = X G G^T X^T``: ``E[tr T'] = b tr T``, ``E[(tr T')^2] = b^2 (tr T)^2 + 2 b tr T^2`` and
``E[tr T'^2] = b (tr T)^2 + (b^2 + b) tr T^2`` (Gaussian quadratic forms). Starting from ``T = I_n``
with ``b = w`` for the first ``D - 1`` layers and ``b = n_cols`` for the last gives ``E||Y||_F^2 = n``
and ``E||Y||_F^4`` (:func:`norm_moments`; e.g. ``27 + 22/w`` for 5x5, depth 2). A degree of freedom off
by ``delta`` on all ``n`` diagonals moves ``E||Y||_F^2`` by the factor ``(1 + delta/w)^(D-1)``.

**The stream of ``direct`` and ``bartlett``.** Samples come in blocks of ``BLOCK`` (1,024): block ``j``
of a run with key ``k`` draws from ``Generator(SFC64(SeedSequence([k_0, k_1, j, tag])))`` (``k_0, k_1``
the key's two words, ``tag`` 1 for direct, 2 for bartlett), sample ``j BLOCK + r`` from the ``r``-th
row of the block's draws (direct: ``(BLOCK, n_params)`` standard normals or U[-1, 1), filled row after
row, layer by layer as ``matrix_sensing.weights_from_draws``; bartlett: per factor the block's
``(BLOCK, n)`` chi-squares as ``2 standard_gamma(df / 2)``, then its ``(BLOCK, n (n-1)/2)`` normals
below the diagonal, and after the last factor ``Z (BLOCK, n, n_cols)``). A block's losses and its sums are
computed the same way whatever run or chunk it belongs to and whichever thread computes it; the block
sums are added one after another in block order. Counts, sums and minima are therefore identical for
every chunk size and thread count (tested), and sample ``i`` does not depend on ``samples``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import threading
from collections import deque
from typing import NamedTuple

import jax
import numpy as np

BLOCK = 1024  # samples per block (the numbers depend on it, so it is fixed); matrix_sensing.BLOCK is this
SAMPLERS = ("direct-jax", "direct", "bartlett")  # what a GCSpec runs
CONFIG_SAMPLERS = ("auto", *SAMPLERS)  # what a Config may ask for
_TAG = {"direct": 1, "bartlett": 2}
_SUB_BYTES = 1 << 20  # direct: draws per step of a block (fits a core's L2 cache; fixed per spec)


# --------------------------------------------------------------------------------------------
# which sampler
# --------------------------------------------------------------------------------------------


def bartlett_refusal(spec) -> str | None:
    """Why the Bartlett sampler is not exact for ``spec`` (``None``: it is)."""
    if spec.prior != "gauss":
        return f"the {spec.prior!r} prior is not rotation invariant (the identity needs Gaussian weights)"
    if spec.activation != "linear":
        return f"the {spec.activation!r} activation breaks the product of the layers (the identity needs 'linear')"
    if spec.width < spec.n_rows:
        return (f"width {spec.width} < n_rows {spec.n_rows}: the first layer's Wishart_{spec.n_rows}({spec.width}) "
                f"is singular and has no Bartlett factor")
    return None


def resolve_sampler(sampler: str, spec) -> str:
    """The sampler a run of ``spec`` uses when ``sampler`` is asked for: ``"auto"`` is ``"bartlett"`` where
    that is exact and ``width > n_rows`` (where it saves draws), else ``"direct"``; ``"bartlett"`` where it
    is not exact is a ``ValueError``."""
    if sampler not in CONFIG_SAMPLERS:
        raise ValueError(f"sampler must be one of {CONFIG_SAMPLERS}, got {sampler!r}")
    why = bartlett_refusal(spec)
    if sampler == "auto":
        return "bartlett" if why is None and spec.width > spec.n_rows else "direct"
    if sampler == "bartlett" and why:
        raise ValueError(f"sampler 'bartlett' is not exact here: {why}; use 'direct' (or 'auto')")
    return sampler


# --------------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------------


def norm_moments(n_rows: int, n_cols: int, width: int, depth: int) -> tuple[float, float]:
    """``(E||Y||_F^2, E||Y||_F^4)`` of the linear Gaussian prior's unnormalised ``Y`` (module docstring)."""
    m, u, v = float(n_rows), float(n_rows) ** 2, float(n_rows)  # E tr T, E (tr T)^2, E tr T^2 of T = I
    for b in [width] * (depth - 1) + [n_cols]:
        m, u, v = b * m, b * b * u + 2 * b * v, b * u + (b * b + b) * v
    c2 = 1.0 / (float(width) ** (depth - 1) * n_cols)
    return c2 * m, c2 * c2 * u


def output_scale(spec) -> float:
    """``c = width^(-(depth-1)/2) n_cols^(-1/2)``: the product of the layers' prior scales."""
    return float(spec.width) ** (-(spec.depth - 1) / 2) / math.sqrt(spec.n_cols)


# --------------------------------------------------------------------------------------------
# one block
# --------------------------------------------------------------------------------------------


def key_words(key) -> tuple[int, int]:
    """The two uint32 words of a JAX PRNG key (raw ``uint32[2]`` or a typed key)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = np.asarray(key, np.uint32).ravel()
    if words.size != 2:
        raise ValueError(f"expected a key of two uint32 words, got shape {np.shape(key)}")
    return int(words[0]), int(words[1])


def block_generator(words: tuple[int, int], block: int, sampler: str) -> np.random.Generator:
    """The generator of block ``block`` of the run with key words ``words`` (module docstring)."""
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence([words[0], words[1], block, _TAG[sampler]])))


def sub_block(spec) -> int:
    """Samples per drawing step of a direct block: the largest power of two <= BLOCK whose draws take
    at most 1 MiB (a function of the spec only, so the numbers do not depend on anything else)."""
    n = BLOCK
    while n > 1 and n * spec.n_params * 8 > _SUB_BYTES:
        n //= 2
    return n


_local = threading.local()


def _buffer(shape: tuple[int, ...]) -> np.ndarray:
    """A float64 work array of ``shape``, reused by the calling thread (no page faults per block)."""
    size = math.prod(shape)
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < size:
        buf = _local.buf = np.empty(size)
    return buf[:size].reshape(shape)


def _act(name: str, slope: float):
    if name == "linear":
        return None
    if name == "tanh":
        return lambda x: np.tanh(x, out=x)
    if name == "leaky_relu":
        if 0 <= slope <= 1:  # max(x, slope x) is where(x >= 0, x, slope x) here, in one pass
            return lambda x: np.maximum(x, slope * x, out=x)
        return lambda x: np.multiply(x, np.where(x >= 0, 1.0, slope), out=x)
    raise ValueError(f"activation must be 'linear', 'tanh' or 'leaky_relu', got {name!r}")


def direct_outputs(rng: np.random.Generator, spec, n: int = BLOCK) -> np.ndarray:
    """``Y (n, n_rows, n_cols)`` of ``n`` networks drawn directly from the prior (``rng``'s draws row
    after row, layer by layer), unnormalised; :func:`sub_block` samples at a time."""
    shapes, scales = spec.shapes, spec.scales
    act = _act(spec.activation, spec.negative_slope)
    Y = np.empty((n, spec.n_rows, spec.n_cols))
    step = sub_block(spec)
    for s in range(0, n, step):
        k = min(step, n - s)
        d = _buffer((k, spec.n_params))
        if spec.prior == "gauss":
            rng.standard_normal(out=d)
        else:
            rng.random(out=d)
            d *= 2.0
            d -= 1.0
        Ws, at = [], 0
        for a, b in shapes:
            Ws.append(d[:, at:at + a * b].reshape(k, a, b))
            at += a * b
        if act is None:
            out = Ws[0]
            for W in Ws[1:]:
                out = np.matmul(out, W)
            out *= output_scale(spec)
        else:
            out = Ws[0] * scales[0]
            act(out)
            for W, sc in zip(Ws[1:-1], scales[1:-1]):
                out = np.matmul(out, W)
                out *= sc
                act(out)
            out = np.matmul(out, Ws[-1])
            out *= scales[-1]
        Y[s:s + k] = out
    return Y


def bartlett_factor(rng: np.random.Generator, n_rows: int, width: int, n: int, df_offset=0) -> np.ndarray:
    """``(n, n_rows, n_rows)`` Bartlett factors of Wishart_n_rows(width, I): ``L_ii^2 ~ chi^2_(width-i+1)``
    (``i = 1..n_rows``), ``L_ij ~ N(0, 1)`` below the diagonal, zero above. ``df_offset`` (a number or one
    per diagonal) is added to the degrees of freedom: 0 but in the tests that show a wrong one is caught."""
    df = width - np.arange(n_rows) + np.asarray(df_offset, dtype=np.float64)
    if np.any(df < 0):  # 0 (a chi-square that is 0) only through df_offset, in the tests
        raise ValueError(f"degrees of freedom must be >= 0, got {df}")
    r = n_rows
    L = np.zeros((n, r * r))
    L[:, np.arange(r) * (r + 1)] = np.sqrt(2.0 * rng.standard_gamma(np.broadcast_to(df / 2.0, (n, r))))
    rows, cols = np.tril_indices(r, -1)
    L[:, rows * r + cols] = rng.standard_normal((n, rows.size))
    return L.reshape(n, r, r)


def bartlett_outputs(rng: np.random.Generator, spec, n: int = BLOCK, df_offset=0) -> np.ndarray:
    """``Y (n, n_rows, n_cols)`` of ``n`` linear Gaussian networks by the identity (module docstring):
    ``c L_1 ... L_(depth-1) Z``, unnormalised; ``df_offset`` as :func:`bartlett_factor` (tests only)."""
    P = None
    for _ in range(spec.depth - 1):
        L = bartlett_factor(rng, spec.n_rows, spec.width, n, df_offset)
        P = L if P is None else np.matmul(P, L)
    Z = rng.standard_normal((n, spec.n_rows, spec.n_cols))
    Y = np.matmul(P, Z)
    Y *= output_scale(spec)
    return Y


def outputs(rng: np.random.Generator, spec, sampler: str, n: int = BLOCK, df_offset=0) -> np.ndarray:
    """``Y (n, n_rows, n_cols)`` of ``sampler`` (``"direct"`` or ``"bartlett"``), normalised when the spec
    says so (``Y / (||Y||_F + softening)``, after the product)."""
    if sampler == "bartlett":
        Y = bartlett_outputs(rng, spec, n, df_offset)
    elif sampler == "direct":
        Y = direct_outputs(rng, spec, n)
    else:
        raise ValueError(f"outputs() draws 'direct' or 'bartlett', got {sampler!r}")
    if spec.normalize:
        Y /= np.sqrt(np.sum(Y * Y, axis=(1, 2), keepdims=True)) + spec.softening
    return Y


def run_outputs(key, spec, sampler: str, samples: int, df_offset=0) -> np.ndarray:
    """``Y`` of samples ``0 .. samples-1`` of a run with ``key``: exactly the networks
    :func:`iter_block_stats` evaluates (tests and two-sample checks)."""
    words = key_words(key)
    with single_threaded_blas():
        blocks = [outputs(block_generator(words, j, sampler), spec, sampler, BLOCK, df_offset)
                  for j in range(-(-samples // BLOCK))]
    return np.concatenate(blocks)[:samples]


class NumpyProblem(NamedTuple):
    """A problem's arrays for the NumPy samplers: the measurements and the complement basis stacked,
    ``AB (m + k, rc)`` (``A`` first), their targets ``target (m + k,)`` (``b``, then ``<B_j, W*>``), and
    ``weights (m + k, 2)``: ``1/m`` on ``A``'s rows in column 0, ``1/k`` on ``B``'s in column 1."""

    AB: np.ndarray
    target: np.ndarray
    weights: np.ndarray

    @staticmethod
    def of(p) -> NumpyProblem:
        A, B = np.asarray(p.A, np.float64), np.asarray(p.B, np.float64)
        m, k = len(A), len(B)
        w = np.zeros((m + k, 2))
        w[:m, 0], w[m:, 1] = 1.0 / m, 1.0 / k
        return NumpyProblem(np.concatenate([A.reshape(m, -1), B.reshape(k, -1)]),
                            np.concatenate([np.asarray(p.b, np.float64), np.asarray(p.b_test, np.float64)]), w)


class BlockStats(NamedTuple):
    """One block's contribution: accepted count, sums of accepted gen losses and their squares, sum of
    all gen losses (chance), least training loss (over the block's samples ``< samples``)."""

    accepted: int
    gen_sum: float
    gen_sq_sum: float
    prior_sum: float
    min_train: float


def losses(Y: np.ndarray, p: NumpyProblem) -> tuple[np.ndarray, np.ndarray]:
    """``(train, gen)`` losses of ``Y (N, r, c)``: ``mean_i (<A_i, Y> - b_i)^2`` and the same over the
    complement basis (one product with the stacked directions, squared residuals, one product with
    the averaging weights)."""
    r = Y.reshape(len(Y), -1) @ p.AB.T
    r -= p.target
    r *= r
    tg = r @ p.weights
    return tg[:, 0], tg[:, 1]


def block_stats(words: tuple[int, int], block: int, samples: int, eps_train: float, p: NumpyProblem, spec,
                sampler: str) -> BlockStats:
    """Block ``block`` of a run: its ``BLOCK`` networks, their losses, and its sums over those of its
    samples whose index is ``< samples``; accepted: training loss ``< eps_train``."""
    Y = outputs(block_generator(words, block, sampler), spec, sampler, BLOCK)
    train, gen = losses(Y, p)
    if (block + 1) * BLOCK > samples:  # the last, partial block: the samples past the run count as nothing
        valid = np.arange(block * BLOCK, (block + 1) * BLOCK) < samples
        train, gen = np.where(valid, train, np.inf), np.where(valid, gen, 0.0)
    ok = train < eps_train
    acc = np.where(ok, gen, 0.0)
    return BlockStats(int(np.count_nonzero(ok)), float(np.sum(acc)), float(np.sum(acc * acc)), float(np.sum(gen)),
                      float(np.min(train)))


def single_threaded_blas():
    """A context in which BLAS runs on one thread (process-wide, through threadpoolctl, a dependency of
    scikit-learn): the samplers' products are small, and a multithreaded OpenBLAS call of ~1e5-1e6
    multiply-adds took 6 ms instead of 37 us on the shared 2-core machine (its threads wait for cores).
    Values are the same either way (OpenBLAS splits a product by rows and columns, not along the sum)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def iter_block_stats(key, first_block: int, n_blocks: int, samples: int, eps_train: float, p: NumpyProblem, spec,
                     sampler: str, threads: int = 0):
    """:class:`BlockStats` of blocks ``first_block .. first_block + n_blocks - 1`` in block order,
    computed by ``threads`` threads (0: :func:`default_threads`; NumPy releases the GIL while it draws
    and multiplies), at most ``2 threads`` blocks ahead of the consumer, BLAS on one thread meanwhile
    (:func:`single_threaded_blas`)."""
    words, threads = key_words(key), threads or default_threads()
    blocks = range(first_block, first_block + n_blocks)
    if threads == 1:
        with single_threaded_blas():
            for j in blocks:
                yield block_stats(words, j, samples, eps_train, p, spec, sampler)
        return
    with single_threaded_blas(), concurrent.futures.ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        it = iter(blocks)
        for j in it:
            pending.append(pool.submit(block_stats, words, j, samples, eps_train, p, spec, sampler))
            if len(pending) >= 2 * threads:
                break
        for j in it:
            yield pending.popleft().result()
            pending.append(pool.submit(block_stats, words, j, samples, eps_train, p, spec, sampler))
        while pending:
            yield pending.popleft().result()
