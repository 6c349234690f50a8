"""Attention knockout in Mamba-1 and Mamba-2 (interp/knockout.py, interp/implicit_attention.py): the
two-scan knockout equals the materialised implicit attention with the (target, source) entries zeroed
(float64, with and without exempt channels / heads, lengths that do not divide the chunk size); the
authors' golden vectors; empty sets give the plain scan bit for bit; sources after a target change nothing."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicitbias.interp import implicit_attention as ia
from implicitbias.interp import knockout as ko
from implicitbias.models.mamba1 import Mamba1Block, selective_scan
from implicitbias.models.mamba2 import Mamba2Block, ssd_chunked

F64 = jnp.float64
L = 13  # does not divide the Mamba-2 chunk size used below (4)


def to64(model):
    return jax.tree_util.tree_map(lambda a: a.astype(F64) if eqx.is_inexact_array(a) else a, model)


def mask(idx, n=L):
    return jnp.zeros((n,), bool).at[jnp.asarray(idx, int)].set(True) if len(idx) else jnp.zeros((n,), bool)


# the authors' tests/src/test_mamba_knockout.py: inputs 2^i, dA = 1, B = 1/N, C = 1, T = 8, N = 8
GOLDEN = [
    ([0, 1, 2], [4], [1, 3, 7, 15, 24, 63, 127, 255]),
    ([0, 1], [4], [1, 3, 7, 15, 28, 63, 127, 255]),
    ([], [], [1, 3, 7, 15, 31, 63, 127, 255]),
    ([], [4], [1, 3, 7, 15, 31, 63, 127, 255]),
    ([0, 1, 2], [], [1, 3, 7, 15, 31, 63, 127, 255]),
    ([0, 1, 2], [4, 5, 6], [1, 3, 7, 15, 24, 56, 120, 255]),
    ([0, 1], [4, 5, 6], [1, 3, 7, 15, 28, 60, 124, 255]),
]


@pytest.mark.parametrize("sources, targets, expected", GOLDEN)
def test_the_authors_golden_vectors(sources, targets, expected):
    T, N = 8, 8
    u = 2.0 ** jnp.arange(T, dtype=jnp.float32)
    dA = jnp.ones((T, 1, N), jnp.float32)
    dBu = jnp.broadcast_to((u / N)[:, None, None], (T, 1, N))
    C = jnp.ones((T, N), jnp.float32)
    y = ko.knockout_selective_scan(dA, dBu, C, mask(sources, T), mask(targets, T))
    assert np.asarray(y[:, 0]).tolist() == [float(v) for v in expected]  # exact: sums of powers of two


@pytest.fixture(scope="module")
def mamba1():
    block = to64(Mamba1Block(8, 4, expand=2, key=jax.random.PRNGKey(0)))
    u = jax.random.normal(jax.random.PRNGKey(1), (L, 8), F64)
    return block, u, block.ssm_inputs(u)


@pytest.fixture(scope="module")
def mamba2():
    block = to64(Mamba2Block(8, 4, expand=2, headdim=4, chunk_size=4, key=jax.random.PRNGKey(2)))
    u = jax.random.normal(jax.random.PRNGKey(3), (L, 8), F64)
    return block, u, block.inputs(u)


def test_mamba1_implicit_attention_reproduces_the_block(mamba1):
    block, u, (x, delta, A, B, C, z) = mamba1
    y = ia.apply_alpha(ia.alpha_mamba1(delta, A, B, C), x)
    np.testing.assert_allclose(block.output(y, x, z), block(u), rtol=1e-11, atol=1e-13)
    alpha = ia.alpha_mamba1(delta, A, B, C)
    assert float(jnp.abs(jnp.triu(alpha.transpose(2, 0, 1), 1)).max()) == 0.0  # causal


def test_mamba2_implicit_attention_reproduces_the_scan(mamba2):
    block, u, (x, dt, A, B, C, z) = mamba2
    y_alpha = ia.apply_alpha(ia.alpha_mamba2(dt, A, B, C), x)
    y_scan = ssd_chunked(x * dt[..., None], A * dt, B, C, block.chunk_size)
    np.testing.assert_allclose(y_alpha, y_scan, rtol=1e-11, atol=1e-13)


CASES = [([2, 3, 7], [9, 12]), ([0], [12]), ([5, 6, 7, 8], [8, 9, 10, 11, 12]), ([11, 12], [3, 12])]


@pytest.mark.parametrize("sources, targets", CASES)
@pytest.mark.parametrize("exempt", [False, True])
def test_mamba1_two_scan_knockout_equals_zeroed_alpha(mamba1, sources, targets, exempt):
    _, _, (x, delta, A, B, C, _) = mamba1
    ex = (jnp.arange(x.shape[1]) % 3 == 0) if exempt else None
    s, t = mask(sources), mask(targets)
    y = ko.knockout_selective_scan(*Mamba1Block.discretize(x, delta, A, B), C, s, t, ex)
    ref = ia.apply_alpha(ia.knock_out_alpha(ia.alpha_mamba1(delta, A, B, C), s, t, ex), x)
    np.testing.assert_allclose(y, ref, rtol=1e-11, atol=1e-13)
    plain = selective_scan(*Mamba1Block.discretize(x, delta, A, B), C)
    assert not np.allclose(y, plain)  # the knockout did something


@pytest.mark.parametrize("sources, targets", CASES)
@pytest.mark.parametrize("exempt", [False, True])
def test_mamba2_two_scan_knockout_equals_zeroed_alpha(mamba2, sources, targets, exempt):
    block, _, (x, dt, A, B, C, _) = mamba2
    ex = jnp.asarray([True, False, False, True]) if exempt else None
    s, t = mask(sources), mask(targets)
    y = ko.knockout_ssd(x * dt[..., None], A * dt, B, C, block.chunk_size, s, t, ex)
    ref = ia.apply_alpha(ia.knock_out_alpha(ia.alpha_mamba2(dt, A, B, C), s, t, ex), x)
    np.testing.assert_allclose(y, ref, rtol=1e-11, atol=1e-13)


def test_empty_sets_give_the_plain_scans_bit_for_bit(mamba1, mamba2):
    _, _, (x, delta, A, B, C, _) = mamba1
    dA, dBu = Mamba1Block.discretize(x, delta, A, B)
    plain = selective_scan(dA, dBu, C)
    for s, t in ((mask([]), mask([12])), (mask([3]), mask([])), (mask([]), mask([]))):
        assert np.array_equal(ko.knockout_selective_scan(dA, dBu, C, s, t), plain)
    block, _, (x2, dt, A2, B2, C2, _) = mamba2
    plain2 = ssd_chunked(x2 * dt[..., None], A2 * dt, B2, C2, block.chunk_size)
    for s, t in ((mask([]), mask([12])), (mask([3]), mask([]))):
        assert np.array_equal(ko.knockout_ssd(x2 * dt[..., None], A2 * dt, B2, C2, block.chunk_size, s, t), plain2)
    everything = jnp.ones((x.shape[1],), bool)  # every channel exempt: nothing is knocked out
    assert np.array_equal(ko.knockout_selective_scan(dA, dBu, C, mask([3]), mask([12]), everything), plain)


def test_sources_after_every_target_change_nothing(mamba1):
    _, _, (x, delta, A, B, C, _) = mamba1
    dA, dBu = Mamba1Block.discretize(x, delta, A, B)
    plain = selective_scan(dA, dBu, C)
    y = ko.knockout_selective_scan(dA, dBu, C, mask([9, 10, 11, 12]), mask([2, 5, 8]))
    np.testing.assert_array_equal(y, plain)  # causality: alpha(t, s) = 0 for s > t already


def test_decay_groups_exempt_the_fastest_or_slowest_third():
    A_log = jnp.log(jnp.asarray([[1.0, 2.0], [0.1, 0.2], [3.0, 3.0], [0.5, 0.5], [5.0, 1.0], [0.01, 0.01]]))
    rate = np.exp(-np.exp(np.asarray(A_log))).sum(1)
    np.testing.assert_allclose(ko.decay_rates(A_log), rate, rtol=1e-15)
    assert not ko.decay_groups(A_log, "all").any()
    fast, slow = np.asarray(ko.decay_groups(A_log, "fast")), np.asarray(ko.decay_groups(A_log, "slow"))
    assert set(np.flatnonzero(fast)) == set(np.argsort(rate)[:2])
    assert set(np.flatnonzero(slow)) == set(np.argsort(rate)[-2:])
    heads = ko.decay_groups(jnp.log(jnp.asarray([4.0, 0.5, 1.0])), "slow")  # Mamba-2: one scalar per head
    assert np.asarray(heads).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="group must be one of"):
        ko.decay_groups(A_log, "medium")


@pytest.fixture(scope="module", params=["mamba1", "mamba2"])
def lm(request):
    from implicitbias.models.lm import make_lm

    kw = {"headdim": 4, "chunk_size": 4} if request.param == "mamba2" else {}
    model = to64(make_lm(request.param, 11, 8, 3, d_state=4, key=jax.random.PRNGKey(5), **kw))
    tokens = jax.random.randint(jax.random.PRNGKey(6), (L,), 0, 11)
    return model, tokens


def test_an_empty_window_or_source_set_gives_the_plain_lm_bit_for_bit(lm):
    model, tokens = lm
    plain = model(tokens)
    none, every = jnp.zeros((3,), bool), jnp.ones((3,), bool)
    assert np.array_equal(ko.knockout_logits(model, tokens, none, mask([1, 2]), mask([12])), plain)
    assert np.array_equal(ko.knockout_logits(model, tokens, every, mask([]), mask([12])), plain)


def test_a_window_knocks_out_only_its_layers_and_outputs_before_the_targets_stay(lm):
    model, tokens = lm
    from implicitbias.models.lm import rms_norm

    s, t = mask([0, 1, 2, 3]), mask([9, 12])
    window = jnp.asarray([False, True, False])
    h = model.embedding[tokens]  # by hand: the knockout in layer 1 only
    for i, (w, mixer) in enumerate(zip(model.norms, model.mixers)):
        u = rms_norm(h, w, model.eps)
        h = h + (ko.knockout_mixer(mixer, u, s, t) if i == 1 else mixer(u))
    got = ko.knockout_logits(model, tokens, window, s, t)
    np.testing.assert_allclose(got, model.logits(h), rtol=1e-12, atol=1e-14)
    plain = model(tokens)
    np.testing.assert_array_equal(got[:9], plain[:9])  # causal: positions before the first target
    assert not np.allclose(got[12], plain[12])


def test_windows_cover_every_start():
    w = np.asarray(ko.layer_windows(5, 3))
    assert w.tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]
    with pytest.raises(ValueError, match="window size"):
        ko.layer_windows(5, 6)


def test_positions_follow_the_authors_definitions():
    from implicitbias.interp.info_flow import positions

    p = {k: np.flatnonzero(v).tolist() for k, v in positions(7, (2, 4)).items()}
    assert p == {"first": [0], "last": [6], "subject": [2, 3], "relation": [0, 1, 4, 5, 6], "context": [0, 1]}
    with pytest.raises(ValueError, match="subject span"):
        positions(5, (3, 6))


@pytest.mark.slow  # 8 s for both architectures; moved to make test-all to keep the fast suite under 180 s
def test_batched_variants_equal_single_forwards(lm):
    from implicitbias.interp import info_flow as fl

    model, tokens = lm
    windows = ko.layer_windows(3, 2)
    sources = jnp.stack([mask([0, 1, 2]), mask([5, 6]), mask([])])
    batched = fl.knockout_last_probs(model, tokens, windows, sources)
    targets = mask([L - 1])
    one = eqx.filter_jit(lambda w, s: jax.nn.softmax(ko.knockout_logits(model, tokens, w, s, targets)[-1]))
    for w in range(windows.shape[0]):
        for s in range(sources.shape[0]):
            single = one(windows[w], sources[s])
            np.testing.assert_allclose(batched[w, s], single, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(batched[0, 2], fl.last_probs(model, tokens), rtol=1e-12, atol=1e-15)


def test_relative_change_and_its_interval():
    from implicitbias.interp import info_flow as fl

    assert fl.relative_change(0.3, 0.6) == pytest.approx(-50.0)
    changes = np.array([[-50.0, 0.0], [-30.0, 0.0], [-40.0, 0.0]])
    out = fl.summarize(changes, np.array([[True, True], [False, True], [True, True]]))
    assert out["mean"][0] == pytest.approx(-40.0) and out["mean"][1] == 0.0
    assert out["half_width"][0] == pytest.approx(4.30265272974946 * 10.0 / np.sqrt(3), rel=1e-12)  # t_{0.975,2}
    assert out["kept_top1"] == [pytest.approx(2 / 3), 1.0]


# the transformer in the fast suite (7-10 s each; the Mambas' knockout layers are checked against the
# materialised alpha and single forwards there too); all three in make test-all
@pytest.mark.parametrize("kind", [pytest.param("mamba1", marks=pytest.mark.slow),
                                  pytest.param("mamba2", marks=pytest.mark.slow), "transformer"])
def test_the_window_sweep_computing_shared_layers_once_equals_the_full_knockouts_padded_or_not(kind):
    from implicitbias.interp import info_flow as fl
    from implicitbias.models.lm import make_lm
    from implicitbias.models.transformer import make_transformer

    key = jax.random.PRNGKey(3)
    n, L = 3, 11
    if kind == "transformer":
        model = make_transformer(23, 16, n, 2, 16, key=key)
        exempt = None
    else:
        kw = dict(headdim=8, chunk_size=4) if kind == "mamba2" else {}
        model = make_lm(kind, 23, 16, n, d_state=4, key=key, **kw)
        exempt = ko.exempt_masks(model, "slow")
    # embeddings 3x HF's 0.02: a knockout then moves the probabilities far above the rounding
    model = eqx.tree_at(lambda m: m.embedding, model, model.embedding * 3)
    tokens = jax.random.randint(jax.random.PRNGKey(4), (L,), 0, 23)
    sources = jnp.stack([mask(list(range(L - 1)), L), mask([1, 2, 3], L), mask([L - 1], L), mask([], L)])
    for ws in (2,):
        full = fl.knockout_last_probs(model, tokens, ko.layer_windows(n, ws), sources, exempt)
        fast = fl.sweep_last_probs(model, tokens, ws, sources, exempt)
        # float32 programs that differ only in which zero-effect selects they run: 16 ulps of the largest
        # probability (measured: 1-2 ulps); the knockout itself moves them by more than 100 times that
        tol = 16 * float(np.finfo(np.float32).eps) * float(full.max())
        np.testing.assert_allclose(fast, full, rtol=0, atol=tol)
        assert float(jnp.abs(full[:, 0] - full[:, 3]).max()) > 100 * tol
        # right-padded to 16 tokens, read at the last real one (the pipeline's one compile per padded length)
        pad = jnp.concatenate([tokens, jnp.zeros(16 - L, tokens.dtype)])
        src_pad = jnp.concatenate([sources, jnp.zeros((sources.shape[0], 16 - L), bool)], axis=1)
        np.testing.assert_allclose(fl.sweep_last_probs(model, pad, ws, src_pad, exempt, jnp.asarray(L - 1)), full,
                                   rtol=0, atol=tol)
