"""The GRPO policy (models/policy.py) and GRPO itself (tasks/grpo.py): the KV cache against full recomputation,
rotary positions, causality; the advantages and the loss against a direct NumPy computation, the loss's
gradient against the REINFORCE form it must reduce to; the sampler's padding after <eos>."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicitbias.models.policy import PolicyLM, rope
from implicitbias.tasks import grpo

F64 = jnp.float64
V, EOS, PAD = 7, 1, 0
forward = eqx.filter_jit(lambda m, t: m(t))


def to64(tree):
    return jax.tree.map(lambda a: a.astype(F64) if eqx.is_inexact_array(a) else a, tree)


@pytest.fixture(scope="module")
def model():
    m = PolicyLM(V, 16, 2, 2, key=jax.random.PRNGKey(0))
    # N(0, 1) embeddings: logits of O(1) so that sampling, eos and the loss are not all near-uniform
    return eqx.tree_at(lambda t: t.embedding, m, m.embedding * 50)


@pytest.fixture(scope="module")
def small():
    """One block of width 8, float64: the loss and gradient checks (compiles in a fraction of the time)."""
    m = PolicyLM(V, 8, 1, 2, key=jax.random.PRNGKey(1))
    return to64(eqx.tree_at(lambda t: t.embedding, m, m.embedding * 50))


def test_the_cache_gives_the_full_forwards_logits(model):
    m = to64(model)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (13,), 0, V)
    full = forward(m, tokens)
    logits, cache = eqx.filter_jit(lambda m, t: m.prefill(t, 13))(m, tokens[:5])
    rows = [logits[-1]]
    step = eqx.filter_jit(lambda m, t, p, c: m.step(t, p, c))
    for pos in range(5, 12):
        lg, cache = step(m, tokens[pos], jnp.asarray(pos), cache)
        rows.append(lg)
    # float64: the same products in another order (one query against a zero-padded, masked cache), rounding
    # ~1e-15 of O(10) logits; atol 1e-10. A cache written at the wrong position is off by O(1).
    np.testing.assert_allclose(np.stack(rows), full[4:12], rtol=0, atol=1e-10)
    np.testing.assert_allclose(logits, full[:5], rtol=0, atol=1e-10)


def test_rotary_scores_depend_only_on_the_position_difference():
    q, k = jax.random.normal(jax.random.PRNGKey(2), (2, 1, 3, 8), F64)
    def score(pq, pk):
        return jnp.einsum("thd,thd->h", rope(q, jnp.array([pq])), rope(k, jnp.array([pk])))
    # rotation angles are float32 (position x frequency): ~1e-7 relative on O(1) scores
    np.testing.assert_allclose(score(3, 1), score(103, 101), atol=1e-4)
    assert np.abs(score(3, 1) - score(3, 2)).max() > 1e-2


def test_the_policy_is_causal(model):
    t = jax.random.randint(jax.random.PRNGKey(3), (10,), 0, V)
    a, b = forward(model, t), forward(model, t.at[6].set((t[6] + 1) % V))
    assert np.array_equal(a[:6], b[:6]) and np.abs(a[6:] - b[6:]).max() > 1e-3


def test_greedy_sampling_is_the_argmax_of_the_full_forward_and_pads_after_eos(model):
    prompts = jax.random.randint(jax.random.PRNGKey(4), (6, 5), 2, V)
    greedy = eqx.filter_jit(grpo.sample)(model, prompts, jax.random.PRNGKey(0), 12, 0.0, EOS, PAD)
    for p, c in zip(np.asarray(prompts), np.asarray(greedy)):
        n = int(np.argmax(c == EOS)) + 1 if (c == EOS).any() else len(c)
        full = np.asarray(forward(model, jnp.asarray(np.concatenate([p, c]))))  # causal: the padding is not seen
        assert np.array_equal(full[len(p) - 1 : len(p) - 1 + n].argmax(-1), c[:n])  # each the argmax given its prefix
        assert (c[n:] == PAD).all()
    # temperature 5: flat enough that <eos> comes within 30 tokens in some rows
    drawn = np.asarray(eqx.filter_jit(grpo.sample)(model, prompts, jax.random.PRNGKey(1), 30, 5.0, EOS, PAD))
    ended = [(row == EOS).any() and int(np.argmax(row == EOS)) < 29 for row in drawn]
    assert any(ended)  # the padding below is exercised
    for row, e in zip(drawn, ended):
        if e:
            assert (row[int(np.argmax(row == EOS)) + 1 :] == PAD).all()


def test_the_completion_mask_keeps_tokens_through_the_first_eos():
    toks = jnp.array([[3, 4, EOS, 5, EOS], [3, 3, 3, 3, 3], [EOS, 2, 2, 2, 2]])
    assert grpo.completion_mask(toks, EOS).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_group_advantages_are_the_bessel_normalised_group_deviations():
    r = np.array([[0.0, 1.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    adv = grpo.group_advantages(r)
    m, s = 1.25, np.sqrt(((r[0] - 1.25) ** 2).sum() / 3)  # torch's std: n - 1
    np.testing.assert_allclose(adv[0], (r[0] - m) / (s + 1e-4), rtol=1e-12)
    assert (adv[1] == 0).all()  # a group of equal rewards teaches nothing
    with pytest.raises(ValueError, match="G >= 2"):
        grpo.group_advantages(np.ones((3, 1)))


def _batch(model, seed=5):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    prompts = jax.random.randint(k1, (4, 5), 2, V)
    comps = jax.random.randint(k2, (4, 6), 0, V).at[1, 2].set(EOS)
    mask = grpo.completion_mask(comps, EOS)
    lp = eqx.filter_jit(lambda m: jax.vmap(lambda p, c: grpo.token_logprobs(m, p, c))(prompts, comps))(model)
    ref = lp - 0.3 * jax.random.uniform(k3, (4, 6))
    adv = jnp.array([1.0, -0.5, 0.25, -0.75])
    return prompts, comps, mask, ref, adv


def test_the_grpo_loss_matches_a_direct_numpy_computation(small):
    m = small
    prompts, comps, mask, ref, adv = _batch(m)
    beta = 0.04
    loss, parts = eqx.filter_jit(grpo.grpo_loss)(m, ref, prompts, comps, mask, adv, beta)
    # NumPy: log-softmax of the full forward's logits, the k3 KL, the masked means
    total, kls = 0.0, 0.0
    for p, c, mk, rf, a in zip(*(np.asarray(x) for x in (prompts, comps, mask, ref, adv))):
        lg = np.asarray(forward(m, jnp.asarray(np.concatenate([p, c]))))[len(p) - 1 : -1]
        lp = lg - lg.max(-1, keepdims=True)
        lp = (lp - np.log(np.exp(lp).sum(-1, keepdims=True)))[np.arange(len(c)), c]
        kl = np.exp(rf - lp) - (rf - lp) - 1
        total += ((-(a - beta * kl)) * mk).sum() / mk.sum()
        kls += (kl * mk).sum() / mk.sum()
    np.testing.assert_allclose(float(loss), total / 4, rtol=1e-10)
    np.testing.assert_allclose(float(parts["kl"]), kls / 4, rtol=1e-10)


@pytest.mark.slow  # 6 s on a shared machine; moved to make test-all to keep the fast suite under 180 s
def test_without_kl_the_gradient_is_reinforces(small):
    """With beta = 0, grad loss = -mean_i (sum_t mask A_i grad logp_it / n_i): the ratio term's value is 1 but its
    gradient is the score function."""
    m = small
    prompts, comps, mask, ref, adv = _batch(m, seed=6)
    g = eqx.filter_jit(eqx.filter_grad(lambda q: grpo.grpo_loss(q, ref, prompts, comps, mask, adv, 0.0)[0]))(m)

    def reinforce(q):
        lp = jax.vmap(lambda p, c: grpo.token_logprobs(q, p, c))(prompts, comps)
        return -jnp.mean((lp * mask).sum(-1) * adv / mask.sum(-1))

    g2 = eqx.filter_jit(eqx.filter_grad(reinforce))(m)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g)) > 1e-6


@pytest.mark.slow  # 2-7 s; moved to make test-all (a fresh-clone fast suite took 171 s of its 180)
def test_the_update_group_by_group_has_the_whole_batchs_gradient(small):
    from implicitbias.tasks.equations_rl import accumulated_gradient

    m = small
    prompts, comps, mask, ref, adv = _batch(m, seed=7)
    params, static = eqx.partition(m, eqx.is_inexact_array)
    whole = eqx.filter_jit(eqx.filter_grad(lambda q: grpo.grpo_loss(eqx.combine(q, static), ref, prompts, comps,
                                                                    mask, adv, 0.04)[0]))(params)
    acc, _, _ = eqx.filter_jit(accumulated_gradient)(params, static, ref, prompts, comps, mask, adv, 0.04, 2)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(acc)):  # float64, two groups of two: rounding only
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # a wrong grouping (two groups of two taken as one of four, or halves swapped with the advantages) differs
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(whole)) > 1e-6


@pytest.mark.parametrize("block", [5, 13])  # three blocks with a short last one; one block
def test_blockwise_causal_attention_is_the_masked_softmax(block):
    from implicitbias.models.policy import causal_attention

    q, k, v = jax.random.normal(jax.random.PRNGKey(8), (3, 13, 2, 4), F64)
    s = np.einsum("thd,shd->hts", q, k) / 2.0  # sqrt(head_dim 4)
    s = np.where(np.tril(np.ones((13, 13), bool))[None], s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    ref = np.einsum("hts,shd->thd", w / w.sum(-1, keepdims=True), v)
    # float64, the same sums in blocks: rounding ~1e-15; a block that saw a later key is off by O(1)
    np.testing.assert_allclose(jax.jit(causal_attention, static_argnums=3)(q, k, v, block), ref, rtol=0, atol=1e-12)
