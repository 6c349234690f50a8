"""The GPT-2-style transformer LM and its attention knockout (models/transformer.py,
interp/attention_knockout.py): causality; the knockout against an independent float64 NumPy forward
with the authors' masked softmax (fully knocked-out rows included); empty windows and sets give the
plain forward bit for bit; a masked row renormalises over the remaining keys; vmap-ed variants equal
single calls; knockout_logits dispatches a transformer and refuses exempt sets; a tiny transformer
learns the recall task."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicitbias.interp import attention_knockout as ak
from implicitbias.interp import knockout as ko
from implicitbias.models.transformer import TransformerLM, make_transformer
from implicitbias.tasks import factual_recall as fr

L, VOCAB, D, N_LAYERS, N_HEADS = 9, 13, 16, 3, 2
F32 = np.float32


def mask(idx, n=L):
    return jnp.zeros((n,), bool).at[jnp.asarray(idx, int)].set(True) if len(idx) else jnp.zeros((n,), bool)


def generic(lm: TransformerLM, seed: int) -> TransformerLM:
    """``lm`` with every parameter redrawn at unit scale (GPT-2's 0.02 initialisation leaves every
    attention nearly uniform, where a wrong mask would barely show): weights ``N(0, 1 / fan_in)``,
    embeddings ``N(0, 1)``, LayerNorm weights ``1 + N(0, 0.2^2)``, biases ``N(0, 0.2^2)``; float32
    (drawn with NumPy: one eager JAX draw per leaf costs a compile each)."""
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(lm)

    def draw(path, leaf):
        name = str(path[-1])
        z = rng.standard_normal(leaf.shape)
        if name.startswith(".w_"):
            z = z / math.sqrt(leaf.shape[0])
        elif not name.startswith((".embedding", ".positions")):
            z = (1.0 + 0.2 * z) if name.endswith("weight") else 0.2 * z
        return jnp.asarray(z, jnp.float32)

    return jax.tree_util.tree_unflatten(treedef, [draw(p, x) for p, x in leaves])


@pytest.fixture(scope="module")
def lm():
    # the structure only (no eager draws to compile); make_transformer's own draws are used below
    shapes = eqx.filter_eval_shape(make_transformer, VOCAB, D, N_LAYERS, N_HEADS, 12, key=jax.random.PRNGKey(0))
    model = generic(shapes, 1)
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, VOCAB, L))
    return model, tokens


# --- an independent float64 reference -------------------------------------------------------------


def _np(a):
    return np.asarray(a, np.float64)


def _layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * _np(w) + _np(b)


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _attend(q, k, v, blocked):
    """One head, row by row: softmax over the causal keys not ``blocked``; a row with none left is
    uniform over its causal keys (every score at finfo.min, the authors' additive mask)."""
    out = np.zeros_like(q)
    for t in range(q.shape[0]):
        keys = [s for s in range(t + 1) if not blocked[t, s]]
        if keys:
            sc = k[keys] @ q[t] / np.sqrt(q.shape[-1])
            w = np.exp(sc - sc.max())
            out[t] = (w / w.sum()) @ v[keys]
        else:
            out[t] = v[: t + 1].mean(0)
    return out


def reference_logits(lm: TransformerLM, tokens, blocked) -> np.ndarray:
    """The forward in float64 NumPy from ``lm``'s weights; ``blocked (n_layers, L, L)`` bool."""
    tokens = np.asarray(tokens)
    n, hd = len(tokens), D // N_HEADS
    h = _np(lm.embedding)[tokens] + _np(lm.positions)[:n]
    for b, blk in zip(lm.blocks, np.asarray(blocked)):
        x = _layer_norm(h, b.ln1_weight, b.ln1_bias)
        q, k, v = np.split(x @ _np(b.w_qkv) + _np(b.b_qkv), 3, axis=-1)
        heads = [_attend(q[:, i * hd : (i + 1) * hd], k[:, i * hd : (i + 1) * hd], v[:, i * hd : (i + 1) * hd], blk)
                 for i in range(N_HEADS)]
        h = h + np.concatenate(heads, -1) @ _np(b.w_out) + _np(b.b_out)
        x = _layer_norm(h, b.ln2_weight, b.ln2_bias)
        h = h + _gelu(x @ _np(b.w_fc) + _np(b.b_fc)) @ _np(b.w_proj) + _np(b.b_proj)
    return _layer_norm(h, lm.ln_f_weight, lm.ln_f_bias) @ _np(lm.embedding).T


def blocked_masks(window, sources, targets) -> np.ndarray:
    w, s, t = (np.asarray(a, bool) for a in (window, sources, targets))
    return w[:, None, None] & t[None, :, None] & s[None, None, :]


# Tolerance in float32 ulps of the largest |logit| (~10 here, an ulp ~1e-6). The float32 forward differs
# from the exact one by rounding alone: unit roundoff 2^-24 per operation, ~10 operations in a chain per
# block (LayerNorm, projections, softmax, sums of <= 64 terms), 3 blocks, and the LayerNorms' 1/std
# carrying an error forward; measured 1.6 to 3.1 ulps (three seeds, every case below). 32 ulps bounds
# that with a factor 10 to spare, while every knockout moves its targets' logits by >= 4e5 ulps (the
# check below asks 1000 x the tolerance), so a wrong mask cannot pass.
ULPS = 32

CASES = [  # window, sources, targets
    ([False, True, True], [1, 2, 3], [8]),  # subject-like sources -> last, late window
    ([True, True, True], [0], [4, 8]),  # first token -> two targets, every layer
    ([True, False, False], list(range(L)), [5, 8]),  # every key of two rows knocked out: uniform rows
    ([False, True, False], [2, 8], [2, 3, 8]),  # a target that is also a source: its own key too
]


@pytest.mark.parametrize("window, sources, targets", CASES)
def test_the_knockout_matches_a_float64_numpy_forward(lm, window, sources, targets):
    model, tokens = lm
    w, s, t = jnp.asarray(window), mask(sources), mask(targets)
    got = np.asarray(ak.knockout_transformer_logits(model, tokens, w, s, t))
    ref = reference_logits(model, tokens, blocked_masks(w, s, t))
    tol = ULPS * np.spacing(F32(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    plain = reference_logits(model, tokens, np.zeros((N_LAYERS, L, L), bool))
    assert np.abs(ref - plain)[np.asarray(t)].max() > 1000 * tol  # the knockout moves the targets' logits
    before = np.arange(L) < min(targets)  # causal: rows before the first target are the plain forward's
    np.testing.assert_array_equal(got[before], np.asarray(model(tokens))[before])


def test_the_plain_forward_matches_the_float64_forward_and_is_float32(lm):
    model, tokens = lm
    got = model(tokens)
    assert got.dtype == jnp.float32 and got.shape == (L, VOCAB)
    ref = reference_logits(model, tokens, np.zeros((N_LAYERS, L, L), bool))
    np.testing.assert_allclose(got, ref, rtol=0, atol=ULPS * np.spacing(F32(np.abs(ref).max())))


def test_a_later_token_leaves_earlier_logits_unchanged_bit_for_bit(lm):
    model, tokens = lm
    other = tokens.at[-1].set((tokens[-1] + 1) % VOCAB).at[-2].set((tokens[-2] + 5) % VOCAB)
    a, b = np.asarray(model(tokens)), np.asarray(model(other))
    np.testing.assert_array_equal(a[:-2], b[:-2])
    assert not np.allclose(a[-1], b[-1])
    w, s, t = jnp.ones((N_LAYERS,), bool), mask([1, 2]), mask([4, 8])
    a, b = (np.asarray(ak.knockout_transformer_logits(model, x, w, s, t)) for x in (tokens, other))
    np.testing.assert_array_equal(a[:-2], b[:-2])
    with pytest.raises(ValueError, match="max_len"):
        model(jnp.zeros((13,), int))


def test_an_empty_window_or_set_gives_the_plain_forward_bit_for_bit(lm):
    model, tokens = lm
    plain = np.asarray(model(tokens))
    none, every = jnp.zeros((N_LAYERS,), bool), jnp.ones((N_LAYERS,), bool)
    for w, s, t in [(none, mask([1, 2]), mask([8])), (every, mask([]), mask([8])), (every, mask([1, 2]), mask([]))]:
        np.testing.assert_array_equal(ak.knockout_transformer_logits(model, tokens, w, s, t), plain)


def test_a_masked_row_renormalises_over_the_remaining_keys(lm):
    model, tokens = lm
    s = mask([1, 2, 3])
    allowed = ~(mask([8])[:, None] & s[None, :])
    plain = np.asarray(ak.attention_weights(model, tokens, 1), np.float64)
    knocked = np.asarray(ak.attention_weights(model, tokens, 1, allowed), np.float64)
    assert knocked.shape == (N_HEADS, L, L)
    np.testing.assert_allclose(knocked.sum(-1), 1.0, rtol=0, atol=4e-7)
    assert (knocked[:, 8, 1:4] == 0.0).all()  # exactly 0 on the sources
    np.testing.assert_array_equal(knocked[:, :8], plain[:, :8])  # other rows untouched
    rest = plain[:, 8] * ~np.asarray(s)
    np.testing.assert_allclose(knocked[:, 8], rest / rest.sum(-1, keepdims=True), rtol=1e-5)
    assert np.triu(plain, 1).max() == 0.0  # causal
    # every causal key of row 5 knocked out: uniform over 0..5 (the authors' finfo.min on each), never the future
    full = np.asarray(ak.attention_weights(model, tokens, 0, ~mask([5])[:, None] | jnp.zeros((L, L), bool)))
    np.testing.assert_allclose(full[:, 5, :6], 1 / 6, rtol=1e-6)
    assert (full[:, 5, 6:] == 0.0).all()


def test_vmapped_variants_equal_single_calls(lm):
    model, tokens = lm
    windows = jnp.asarray([w for w, _, _ in CASES])
    sources = jnp.stack([mask(s) for _, s, _ in CASES])
    targets = jnp.stack([mask(t) for _, _, t in CASES])
    batched = jax.jit(jax.vmap(ak.knockout_transformer_logits, in_axes=(None, None, 0, 0, 0)))(
        model, tokens, windows, sources, targets)
    for i in range(len(CASES)):
        single = ak.knockout_transformer_logits(model, tokens, windows[i], sources[i], targets[i])
        # batched matmuls sum in another order: a few float32 ulps apart (measured <= 2.5), not bit for
        # bit; a variant mixed up with another would be ~1e5 ulps off
        np.testing.assert_allclose(batched[i], single, rtol=0, atol=ULPS * np.spacing(F32(np.abs(single).max())))


def test_knockout_logits_dispatches_a_transformer_and_refuses_exempt_sets(lm):
    model, tokens = lm
    w, s, t = jnp.asarray([False, True, True]), mask([1, 2, 3]), mask([8])
    np.testing.assert_array_equal(ko.knockout_logits(model, tokens, w, s, t),
                                  ak.knockout_transformer_logits(model, tokens, w, s, t))
    assert model.kind == "transformer" and model.n_layers == N_LAYERS
    with pytest.raises(ValueError, match="transformer has none"):
        ko.knockout_logits(model, tokens, w, s, t, exempt=jnp.zeros((N_LAYERS, N_HEADS), bool))
    with pytest.raises(ValueError, match="transformer has none"):
        ko.exempt_masks(model, "fast")


@pytest.mark.slow  # the fast suite trains a tiny LM in tests/test_knockout_experiment.py
def test_a_tiny_transformer_learns_the_facts():
    task = fr.RecallTask(n_subjects=8, subject_vocab=4, n_relations=2, n_attributes=6, n_filler=4, gap=4)
    lm = make_transformer(task.vocab, 16, 1, 2, task.length, key=jax.random.PRNGKey(0))
    assert {x.dtype for x in jax.tree_util.tree_leaves(lm)} == {jnp.dtype(jnp.float32)}
    before = fr.evaluate(lm, task, jax.random.PRNGKey(9), 256)
    out = fr.train_lm(lm, task, jax.random.PRNGKey(1), steps=300, batch=64, lr=1e-2, chunk=300)
    after = fr.evaluate(out.model, task, jax.random.PRNGKey(9), 256)
    assert out.losses[-50:].mean() < 0.5 * out.losses[:50].mean()
    # chance is 1/6 among the attributes; 16 facts of 6 values are learned far above it
    assert after["accuracy"] > 0.6 > before["accuracy"]
