"""The G&C samplers (:mod:`implicitbias.tasks.gc_samplers`): the Bartlett sampler against its
closed-form moments and against direct sampling, the NumPy direct sampler against the reference
forward pass on its own draws, chunk- and thread-invariance, and the ``sampler`` config field.

Statistical checks fail at 5 standard errors (moments, rates, means) or at a two-sided p-value of
``2 Phi(-5) = 5.7e-7`` (Kolmogorov-Smirnov tests), so a correct sampler fails one check with
probability ~6e-7; every sample count is fixed with a fixed key, so each check is deterministic.
Each sample count is sized so that a degree of freedom off by one (``df_offset``, used only here)
moves the checked statistic by >= 8 standard errors in expectation: :func:`test_off_by_one_is_detected`
shows the same checks failing then. Widths 5 and 6 run in the fast set; 20 and 160 (and the direct
sampler at width 160, depths 3-4) are ``slow``.
"""

import dataclasses
import functools
import math

import jax
import numpy as np
import pytest
from scipy import stats

from implicitbias.experiments import gc_vs_gd as exp
from implicitbias.record import config_hash, config_to_dict
from implicitbias.tasks import gc_samplers as gs
from implicitbias.tasks import matrix_sensing as ms

SLOW = pytest.mark.slow
Z_MAX = 5.0  # standard errors
P_MIN = 2 * stats.norm.sf(Z_MAX)  # 5.7e-7: the same 5 sigma as a p-value
GRID = [(w, d) for w in (5, 6, 20, 160) for d in (2, 3, 4)]


def _p(grid, fast=None):
    """``grid`` as parameters, those not in ``fast`` (default: widths 5 and 6) marked slow."""
    fast = fast if fast is not None else [c for c in grid if c[0] <= 6]
    return [pytest.param(*c) if c in fast else pytest.param(*c, marks=SLOW) for c in grid]


def spec(width, depth, normalize=False, sampler="bartlett", n_rows=5, n_cols=5, **kw):
    return ms.GCSpec(n_rows, n_cols, width, depth, normalize=normalize, sampler=sampler, **kw)


def key(seed):
    return jax.random.PRNGKey(seed)


# --------------------------------------------------------------------------------------------
# exact moments
# --------------------------------------------------------------------------------------------


def moment_z(sp, n_blocks, seed=0, df_offset=0):
    """``(z2, z4)``: Monte-Carlo ``E||Y||^2`` and ``E||Y||^4`` of ``n_blocks`` Bartlett blocks minus the
    closed form, in standard errors of the estimator (the sample's own spread: sums of ``s = ||Y||^2``,
    ``s^2`` and ``s^4`` accumulated block by block, so millions of samples take no memory)."""
    words, acc = gs.key_words(key(seed)), np.zeros(4)
    for j in range(n_blocks):
        Y = gs.outputs(gs.block_generator(words, j, "bartlett"), sp, "bartlett", gs.BLOCK, df_offset)
        s = np.sum(Y * Y, axis=(1, 2))
        acc += [np.sum(s), np.sum(s * s), np.sum(s**3), np.sum(s**4)]
    n = n_blocks * gs.BLOCK
    e1, e2, e3, e4 = acc / n
    m2, m4 = gs.norm_moments(sp.n_rows, sp.n_cols, sp.width, sp.depth)
    return (e1 - m2) / math.sqrt((e2 - e1 * e1) / n), (e2 - m4) / math.sqrt((e4 - e2 * e2) / n)


def moment_blocks(width, depth, n_rows=5):
    """Blocks (>= 64) for which one diagonal's degree of freedom off by one moves ``E||Y||^2`` by 8
    standard errors in expectation (relative shift ``~(depth-1) / (n_rows width)``, an overestimate at
    widths 5-6 and depth 4, hence the floor; spread from the closed form)."""
    m2, m4 = gs.norm_moments(n_rows, 5, width, depth)
    rel_sd, shift = math.sqrt(m4 / m2**2 - 1), (depth - 1) / (n_rows * width)
    return max(64, math.ceil((8 * rel_sd / shift) ** 2 / gs.BLOCK))


def test_norm_moments_closed_form():
    # the recursion by hand for 5x5, depth 2: E||Y||^2 = 5, E||Y||^4 = 27 + 22/w (module docstring); at
    # width 1 the product of a 5-vector and a 5-vector: ||g||^2 ||h||^2 / 5, E = 5, E^2 = (35/5)^2 = 49
    for w in (1, 5, 160):
        m2, m4 = gs.norm_moments(5, 5, w, 2)
        assert m2 == pytest.approx(5.0, rel=1e-14) and m4 == pytest.approx(27 + 22 / w, rel=1e-14)
    assert gs.norm_moments(5, 5, 1, 2)[1] == pytest.approx(49.0, rel=1e-14)
    # E||Y||^2 = n_rows at every width and depth (each entry has variance 1 / n_cols)
    assert gs.norm_moments(3, 7, 11, 6)[0] == pytest.approx(3.0, rel=1e-13)


@pytest.mark.parametrize("width,depth,n_rows,n_cols", [(5, 2, 5, 5), (3, 3, 5, 5), (8, 3, 3, 6)])
def test_norm_moments_against_direct_sampling(width, depth, n_rows, n_cols):
    # the closed form itself, against the direct sampler (not against Bartlett): 64k samples at
    # narrow widths, non-square included (the Wishart is n_rows x n_rows)
    sp = spec(width, depth, sampler="direct", n_rows=n_rows, n_cols=n_cols)
    Y = gs.run_outputs(key(3), sp, "direct", 64 * gs.BLOCK)
    s = np.sum(Y * Y, axis=(1, 2))
    m2, m4 = gs.norm_moments(n_rows, n_cols, width, depth)
    n = len(s)
    assert abs(s.mean() - m2) < Z_MAX * s.std() / math.sqrt(n)
    assert abs(np.mean(s * s) - m4) < Z_MAX * np.std(s * s) / math.sqrt(n)


@pytest.mark.parametrize("width,depth", _p(GRID))
def test_bartlett_exact_moments(width, depth):
    z2, z4 = moment_z(spec(width, depth), moment_blocks(width, depth))
    assert abs(z2) < Z_MAX and abs(z4) < Z_MAX, (z2, z4)


def test_bartlett_moments_non_square():
    # 3 x 7 end-to-end matrix: the Wishart is 3 x 3 (n_rows), Z is 3 x 7
    sp = spec(4, 3, n_rows=3, n_cols=7)
    z2, z4 = moment_z(sp, 64)
    assert abs(z2) < Z_MAX and abs(z4) < Z_MAX, (z2, z4)


OFFSETS = {"all -1 (w - i)": -1, "all +1 (w - i + 2)": 1, "last diagonal +1": [0, 0, 0, 0, 1]}


@pytest.mark.parametrize("width,depth", _p(GRID, fast=[(5, 2), (6, 3)]))
def test_off_by_one_is_detected(width, depth):
    """The moment check of :func:`test_bartlett_exact_moments`, at its sample count, fails for each wrong
    degree of freedom: all diagonals one lower (1-based ``i`` in ``w - i``), one higher, or the last
    diagonal alone one higher."""
    n = moment_blocks(width, depth)
    for name, off in OFFSETS.items():
        z2, z4 = moment_z(spec(width, depth), n, df_offset=off)
        assert max(abs(z2), abs(z4)) > Z_MAX, (name, z2, z4)


# --------------------------------------------------------------------------------------------
# two-sample tests against direct sampling
# --------------------------------------------------------------------------------------------


def energy_z(X, Y, perms=200, seed=0):
    """Energy distance between the samples ``X``, ``Y`` (rows: points), as standard deviations of its
    permutation distribution above that distribution's mean."""
    Z = np.concatenate([X, Y])
    sq = np.sum(Z * Z, axis=1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0.0))
    n, m, total = len(X), len(Y), D.sum()
    rng = np.random.default_rng(seed)
    labels = np.zeros((len(Z), perms + 1))
    labels[:n, 0] = 1
    for k in range(1, perms + 1):
        labels[rng.permutation(len(Z))[:n], k] = 1
    DL = D @ labels
    sxx = np.sum(labels * DL, axis=0)
    sxy = np.sum((1 - labels) * DL, axis=0)
    syy = total - 2 * sxy - sxx
    e = 2 * sxy / (n * m) - sxx / n**2 - syy / m**2
    return (e[0] - e[1:].mean()) / e[1:].std()


def law_checks(Ya, Yb, energy_points=1500):
    """``{check: p-value}`` of two-sample Kolmogorov-Smirnov tests on ``||Y||_F``, each singular value and
    each entry, and ``{"energy z": z}`` for the joint law of the entries (first ``energy_points``)."""
    out = {"norm": stats.ks_2samp(np.linalg.norm(Ya, axis=(1, 2)), np.linalg.norm(Yb, axis=(1, 2))).pvalue}
    sa, sb = np.linalg.svd(Ya, compute_uv=False), np.linalg.svd(Yb, compute_uv=False)
    for k in range(sa.shape[1]):
        out[f"sv{k + 1}"] = stats.ks_2samp(sa[:, k], sb[:, k]).pvalue
    fa, fb = Ya.reshape(len(Ya), -1), Yb.reshape(len(Yb), -1)
    for e in range(fa.shape[1]):
        out[f"entry{divmod(e, Ya.shape[2])}"] = stats.ks_2samp(fa[:, e], fb[:, e]).pvalue
    z = energy_z(fa[:energy_points], fb[:energy_points])
    return out, z


def failed(checks):
    p, z = checks
    return [k for k, v in p.items() if v < P_MIN] + (["energy"] if z > Z_MAX else [])


def two_sample_n(sp):
    """Direct samples per check: 20,480 where the draws are cheap, fewer (>= 2,048) at width 160, depth 3-4."""
    return max(2, min(20, int(3e7 / sp.n_params) // gs.BLOCK)) * gs.BLOCK


@pytest.mark.parametrize("width,depth,normalize", _p([(*c, z) for c in GRID for z in (False, True)],
                                                    fast=[(5, 2, False), (6, 3, True)]))
def test_bartlett_same_law_as_direct(width, depth, normalize):
    sp = spec(width, depth, normalize)
    n = two_sample_n(sp)
    Yb = gs.run_outputs(key(1), sp, "bartlett", n)
    Yd = gs.run_outputs(key(2), dataclasses.replace(sp, sampler="direct"), "direct", n)
    checks = law_checks(Yb, Yd)
    assert not failed(checks), (failed(checks), checks)


def test_two_sample_checks_have_power():
    # the same checks catch a wrong degree of freedom at width 5 and a wrong order of the product
    # (Z L instead of L Z: the same singular values in law, rows with the wrong variances)
    sp = spec(5, 2)
    n = two_sample_n(sp)
    Yd = gs.run_outputs(key(2), dataclasses.replace(sp, sampler="direct"), "direct", n)
    wrong_df = gs.run_outputs(key(1), sp, "bartlett", n, df_offset=-1)
    assert {"norm", "sv1", "energy"} <= set(failed(law_checks(wrong_df, Yd)))
    rng = gs.block_generator((0, 1), 0, "bartlett")
    L = np.concatenate([gs.bartlett_factor(rng, 5, 5, gs.BLOCK) for _ in range(n // gs.BLOCK)])
    Z = rng.standard_normal((n, 5, 5))
    swapped = np.matmul(Z, L) * gs.output_scale(sp)
    checks = law_checks(swapped, Yd, energy_points=2000)  # 1,500 points: z = 5.9, 2,000: ~10
    bad = failed(checks)
    assert any(k.startswith("entry") for k in bad) and "energy" in bad, (bad, checks[1])
    assert not any(k.startswith("sv") for k in bad), bad


# --------------------------------------------------------------------------------------------
# acceptance rate and chance on fixed problems
# --------------------------------------------------------------------------------------------


def _rate_z(a, b, n):
    pa, pb = a / n, b / n
    pool = (a + b) / (2 * n)
    return (pa - pb) / math.sqrt(2 * pool * (1 - pool) / n)


PROBLEMS = {"rank1": (0, 1, 15), "rank2": (1, 2, 22)}  # name: (seed, rank, measurements)


@functools.cache
def fixed_problem(name):
    seed, rank, m = PROBLEMS[name]
    return ms.make_problem(seed, rank=rank, n_measurements=m)


ACCEPT = [(w, d, z, eps, prob) for w, d, z, eps in [(6, 2, False, 0.1), (5, 3, True, 0.05), (20, 3, True, 0.05),
                                                     (160, 2, False, 0.1), (160, 4, True, 0.05)]
          for prob in ("rank1", "rank2")]


@pytest.mark.parametrize("width,depth,normalize,eps,problem",
                         _p(ACCEPT, fast=[(6, 2, False, 0.1, "rank1"), (5, 3, True, 0.05, "rank1")]))
def test_acceptance_and_chance(width, depth, normalize, eps, problem):
    p = fixed_problem(problem)
    sp = spec(width, depth, normalize, eps_train=eps)
    n = (10 if width == 160 and depth == 4 else 100 if width > 6 else 50) * gs.BLOCK
    res = {}
    for s in ("bartlett", "direct"):
        Y = gs.run_outputs(key(5), dataclasses.replace(sp, sampler=s), s, n)
        res[s] = gs.losses(Y, gs.NumpyProblem.of(p))
    (tb, gb), (td, gd) = res["bartlett"], res["direct"]
    ab, ad = int(np.sum(tb < eps)), int(np.sum(td < eps))
    assert ab > 100 and ad > 100
    assert abs(_rate_z(ab, ad, n)) < Z_MAX, (ab, ad)
    # chance: each sampler against the closed form, and G&C's number (the accepted mean) between them
    closed = ms.chance_closed_form(p, sp)
    for g in (gb, gd):
        assert abs(g.mean() - closed) < Z_MAX * g.std() / math.sqrt(n)
    xb, xd = gb[tb < eps], gd[td < eps]
    assert abs(xb.mean() - xd.mean()) < Z_MAX * math.sqrt(xb.var() / ab + xd.var() / ad)


def test_acceptance_detects_off_by_one():
    # the same comparison with the last diagonal's degree of freedom one too high, width 5
    p = fixed_problem("rank1")
    sp = spec(5, 2, eps_train=0.1)
    n = 100 * gs.BLOCK
    tb, _ = gs.losses(gs.run_outputs(key(5), sp, "bartlett", n, df_offset=[0, 0, 0, 0, 1]), gs.NumpyProblem.of(p))
    td, _ = gs.losses(gs.run_outputs(key(5), dataclasses.replace(sp, sampler="direct"), "direct", n),
                      gs.NumpyProblem.of(p))
    assert abs(_rate_z(int(np.sum(tb < 0.1)), int(np.sum(td < 0.1)), n)) > Z_MAX


# --------------------------------------------------------------------------------------------
# the pipeline: the samplers inside guess_and_check
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def problem():
    return fixed_problem("rank1")


def _gc(p, sp, samples, chunk=0, threads=1, seed=1):
    return ms.guess_and_check([key(seed)], [p], sp, samples, chunk, threads)


@pytest.mark.parametrize("sp", [spec(6, 3, True, eps_train=0.03), spec(5, 2, sampler="direct", eps_train=0.1),
                                spec(7, 3, True, "direct", activation="tanh", eps_train=0.05)],
                         ids=["bartlett", "direct", "direct-tanh"])
def test_same_numbers_whatever_the_chunk_or_threads(problem, sp):
    n = 2 * gs.BLOCK + 77  # a partial last block
    results = [_gc(problem, sp, n, chunk, threads) for chunk, threads in
               [(gs.BLOCK, 1), (2 * gs.BLOCK, 2), (3 * gs.BLOCK, 2), (gs.BLOCK, 3)]]
    assert results[0].accepted[0] > 0
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert np.array_equal(a, b, equal_nan=True)
    # sample i does not depend on how many are drawn
    Y = gs.run_outputs(key(1), sp, sp.sampler, n)
    np.testing.assert_array_equal(gs.run_outputs(key(1), sp, sp.sampler, 100), Y[:100])


@pytest.mark.parametrize("sp", [spec(6, 3, True, eps_train=0.03), spec(5, 2, sampler="direct", eps_train=0.1)],
                         ids=["bartlett", "direct"])
def test_pipeline_sums_are_the_outputs_sums(problem, sp):
    n = gs.BLOCK + 300
    r = _gc(problem, sp, n, threads=2)
    train, gen = gs.losses(gs.run_outputs(key(1), sp, sp.sampler, n), gs.NumpyProblem.of(problem))
    ok = train < sp.eps_train
    # the same float64 losses summed in other orders: rel 1e-12 (n eps64 ~ 3e-13)
    assert int(r.accepted[0]) == int(ok.sum()) > 0
    assert r.gen_mean[0] == pytest.approx(gen[ok].mean(), rel=1e-12)
    assert r.chance[0] == pytest.approx(gen.mean(), rel=1e-12)
    assert r.min_train[0] == train.min()


DIRECT_SPECS = [spec(5, 2, sampler="direct", eps_train=0.1),
                spec(7, 3, True, "direct", activation="tanh", eps_train=0.05),
                spec(6, 4, False, "direct", activation="leaky_relu", eps_train=0.05),
                spec(6, 2, False, "direct", prior="unif", eps_train=0.05),
                spec(40, 3, True, "direct", eps_train=0.05)]  # 40: sub-blocks of 64 samples


@pytest.mark.parametrize("sp", DIRECT_SPECS, ids=["linear", "tanh", "leaky_relu", "unif", "w40-subblocks"])
def test_direct_matches_reference_on_its_draws(problem, sp):
    # the block's draws regenerated in one fill of (BLOCK, n_params), then the reference NumPy forward
    # pass (matrix_sensing.numpy_guess_and_check): the same networks, the same losses
    words = gs.key_words(key(4))
    rng = gs.block_generator(words, 3, "direct")
    draws = rng.standard_normal((gs.BLOCK, sp.n_params)) if sp.prior == "gauss" else \
        2 * rng.random((gs.BLOCK, sp.n_params)) - 1
    accepted, gen_sum, prior_sum, min_train = ms.numpy_guess_and_check(draws, problem, sp)
    b = gs.block_stats(words, 3, 10 * gs.BLOCK, sp.eps_train, gs.NumpyProblem.of(problem), sp, "direct")
    # the same float64 networks computed in other orders (scales applied at the end for linear
    # networks): a few eps64 relative per loss; rel 1e-11 still catches one sample more or less
    assert b.accepted == accepted > 0
    assert b.gen_sum == pytest.approx(gen_sum, rel=1e-11)
    assert b.prior_sum == pytest.approx(prior_sum, rel=1e-11)
    assert b.min_train == pytest.approx(min_train, rel=1e-11)


@SLOW
@pytest.mark.parametrize("activation,prior", [("tanh", "gauss"), ("linear", "unif"), ("linear", "gauss")])
def test_direct_same_law_as_direct_jax(problem, activation, prior):
    # the new NumPy stream against the stored runs' JAX stream: the same prior in law (8 blocks each)
    sp = spec(7, 3, True, "direct", activation=activation, prior=prior)
    n = 8 * gs.BLOCK
    Yn = gs.run_outputs(key(6), sp, "direct", n)
    draws = jax.jit(ms.sample_draws, static_argnums=1)(key(6), dataclasses.replace(sp, sampler="direct-jax"),
                                                        np.arange(n))
    Yj = np.asarray(ms.forward(ms.weights_from_draws(draws, sp), activation))
    Yj = Yj / (np.linalg.norm(Yj, axis=(1, 2), keepdims=True) + sp.softening)
    checks = law_checks(Yn, Yj)
    assert not failed(checks), (failed(checks), checks)


# --------------------------------------------------------------------------------------------
# the config field
# --------------------------------------------------------------------------------------------


def test_auto_resolves_to_the_fastest_exact_sampler():
    P = exp.PRESETS
    assert [P[f"width/{w}"].resolved_sampler for w in (5, 10, 160)] == ["direct", "bartlett", "bartlett"]
    assert P["width/160"].gc_spec().sampler == "bartlett"
    assert {P[f"depth/{d}"].resolved_sampler for d in range(2, 11)} == {"direct"}  # width 5 = n_rows
    for name in ("width-tanh/40", "width-leaky_relu/40", "depth-tanh/4"):
        assert P[name].resolved_sampler == "direct"
    assert dataclasses.replace(P["width/40"], prior="unif").resolved_sampler == "direct"
    assert dataclasses.replace(P["width/5"], sampler="bartlett").gc_spec().sampler == "bartlett"  # exact at w = n
    assert dataclasses.replace(P["width/40"], sampler="direct-jax").gc_spec().sampler == "direct-jax"
    assert ms.GCSpec(5, 5, 40, 2).sampler == "direct-jax"  # the low-level spec: the original sampler


@pytest.mark.parametrize("change,words", [({"activation": "tanh"}, "tanh"), ({"prior": "unif"}, "unif"),
                                          ({"width": 4}, "singular"), ({"sampler": "bartlet"}, "sampler")])
def test_bartlett_refused_where_not_exact(change, words):
    base = dict(sampler="bartlett") if "sampler" not in change else {}
    with pytest.raises(ValueError, match=words):
        dataclasses.replace(exp.PRESETS["width/40"], **base, **change)
    if "sampler" not in change:
        with pytest.raises(ValueError, match="not exact"):
            dataclasses.replace(ms.GCSpec(5, 5, 40, 2), sampler="bartlett", **change)


def test_sampler_is_recorded_and_hashed():
    c = exp.PRESETS["width/40"]
    assert config_to_dict(c)["sampler"] == "auto"
    assert config_hash("gc_vs_gd", c, "v") != config_hash("gc_vs_gd", dataclasses.replace(c, sampler="direct"), "v")


def test_bartlett_factor_law_and_refusal():
    # one factor: lower triangular, positive diagonal, E L_ii^2 = w - i + 1 (5 SE), E L_ij = 0 below
    n, w = 50_000, 7
    L = gs.bartlett_factor(np.random.default_rng(0), 5, w, n)
    assert np.all(np.triu(L, 1) == 0) and np.all(np.diagonal(L, axis1=1, axis2=2) > 0)
    d2 = np.diagonal(L, axis1=1, axis2=2) ** 2
    df = w - np.arange(5)
    assert np.all(np.abs(d2.mean(0) - df) < Z_MAX * np.sqrt(2 * df / n))
    with pytest.raises(ValueError, match="degrees of freedom"):
        gs.bartlett_factor(np.random.default_rng(0), 5, 3, 1)  # width 3 < 5 rows: a chi-square of -1 dof
