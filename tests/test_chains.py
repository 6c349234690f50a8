"""Chain identification (SPEC §5, issue #5): generator, checkers, the REINFORCE estimator against
the exact gradient on an enumerable case, and a small version of the experiment."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicitbias.experiments import chains as exp
from implicitbias.overrides import parse_overrides
from implicitbias.report import chains as report_chains
from implicitbias.store import Store
from implicitbias.tasks import chains as ch

# ------------------------------------------------------------------------------------------
# generator
# ------------------------------------------------------------------------------------------

def _walk_chains(edges):
    """Rebuild the chains from an edge list by hand; asserts in/out degree <= 1."""
    succ, pred = {}, {}
    for u, w in edges:
        assert u not in succ and w not in pred, "a vertex with two outgoing or two incoming edges"
        succ[u], pred[w] = w, u
    heads = [u for u in succ if u not in pred]
    chains = []
    for h in heads:
        c = [h]
        while c[-1] in succ:
            c.append(succ[c[-1]])
        chains.append(c)
    return chains


@pytest.mark.parametrize("n,complexities", [(4, (1, 2, 3)), (8, (7,)), (12, (1, 5, 11))])
def test_generator_makes_two_disjoint_chains_with_the_requested_complexity(n, complexities):
    N = 24
    batch = jax.tree_util.tree_map(np.asarray, ch.sample_batch(jax.random.PRNGKey(n), 64, N, n, complexities))
    seen_chains = set()
    for i in range(64):
        prompt = np.asarray(batch.prompt[i])
        assert prompt.shape == (2 * (n - 1) + 1,)
        assert np.all(prompt[:-1] >= N) and prompt[-1] < N  # edges, then the start vertex
        u, w = ch.edge_endpoints(prompt[:-1], N)
        chains = _walk_chains(list(zip(u.tolist(), w.tolist())))
        assert len(chains) == 2 and all(len(c) == n for c in chains)
        assert len(set(chains[0]) | set(chains[1])) == 2 * n  # disjoint, distinct labels
        start, c = int(prompt[-1]), int(batch.complexity[i])
        assert c in complexities
        mine = next(ch_ for ch_ in chains if start in ch_)
        assert len(mine) - 1 - mine.index(start) == c  # distance start -> terminal
        assert int(batch.answer[i]) == mine[-1] == int(batch.chains[i, 0, -1])
        path = np.asarray(batch.path[i])
        assert path[:c].tolist() == mine[mine.index(start) + 1:] and np.all(path[c:] == -1)
        has_out = np.asarray(batch.has_out[i])
        assert set(np.flatnonzero(has_out).tolist()) == set(u.tolist())
        seen_chains.add(tuple(mine))
    assert len(seen_chains) == 64  # labels are redrawn per example


def test_generator_weights_and_determinism():
    b1 = ch.sample_batch(jax.random.PRNGKey(3), 200, 24, 4, (1, 2, 3), jnp.array([0.0, 1.0, 0.0]))
    assert np.all(np.asarray(b1.complexity) == 2)
    b2 = ch.sample_batch(jax.random.PRNGKey(3), 200, 24, 4, (1, 2, 3))
    counts = np.bincount(np.asarray(b2.complexity), minlength=4)[1:]
    assert counts.min() > 40  # uniform over 1..3
    b3 = ch.sample_batch(jax.random.PRNGKey(3), 200, 24, 4, (1, 2, 3))
    assert np.array_equal(np.asarray(b2.prompt), np.asarray(b3.prompt))


def test_tokenizer_round_trip_on_the_talks_example():
    edges = [(1, 2), (3, 4), (2, 3), (5, 6), (6, 7), (7, 8)]
    prompt = ch.tokenize(jnp.array(edges), 5, 10)
    assert ch.detokenize(prompt, 10) == "(1,2) (3,4) (2,3) (5,6) (6,7) (7,8) | 5"


# ------------------------------------------------------------------------------------------
# checkers on hand-made trajectories (the talk's example: start 5, answer 8)
# ------------------------------------------------------------------------------------------

EDGES = [(1, 2), (3, 4), (2, 3), (5, 6), (6, 7), (7, 8)]
HAS_OUT = jnp.zeros(10, bool).at[jnp.array([u for u, _ in EDGES])].set(True)
PATH = jnp.array([6, 7, 8, -1, -1, -1, -1])  # chain_len 4 would pad to 3; any padding works


@pytest.mark.parametrize("trace,answer,length,correct,traversal", [
    ([6, 7, 8, 0, 0, 0], 8, 3, True, True),  # the forward walk
    ([6, 7, 8, 1, 4, 9], 8, 3, True, True),  # tokens after the answer are ignored
    ([8, 0, 0, 0, 0, 0], 8, 1, True, False),  # right answer, skipped the chain
    ([6, 6, 7, 8, 0, 0], 8, 4, True, False),  # repeats a vertex
    ([6, 5, 6, 7, 8, 0], 8, 5, True, False),  # steps back
    ([6, 7, 4, 0, 0, 0], 4, 3, False, False),  # jumps to the other chain's terminal
    ([2, 3, 4, 0, 0, 0], 4, 3, False, False),  # walks the other chain
    ([9, 0, 0, 0, 0, 0], 9, 1, False, False),  # a label not in the graph ends the walk
    ([6, 7, 6, 7, 6, 7], ch.NO_ANSWER, 6, False, False),  # no answer within the budget
])
def test_answer_and_traversal_checkers(trace, answer, length, correct, traversal):
    trace = jnp.array(trace)
    a, ln = ch.final_answer(trace, HAS_OUT)
    assert int(a) == answer and int(ln) == length
    assert bool(ch.is_correct(a, 8)) == correct
    assert bool(ch.is_traversal(trace, ln, PATH, 3)) == traversal


def test_traversal_needs_the_budget():
    # complexity 3 with only 2 emitted tokens can never be a traversal
    assert not bool(ch.is_traversal(jnp.array([6, 7]), 2, PATH, 3))


# ------------------------------------------------------------------------------------------
# the model against the formula, and REINFORCE against the exact gradient
# ------------------------------------------------------------------------------------------

def _naive_log_prob(params, V, N, prompt, trace, length, sigma):
    """``H = sigma(Mask(X A X^T)) X V`` with explicit one-hot X and a (D, D) A (zero non-vertex rows)."""
    D = ch.vocab_size(N)
    A_full = jnp.zeros((D, D)).at[:N].set(ch.attention_matrix(params, N))
    seq = jnp.concatenate([prompt, trace])
    X = jax.nn.one_hot(seq, D)
    S = X @ A_full @ X.T
    L = seq.shape[0]
    causal = jnp.tril(jnp.ones((L, L), bool))
    W = jax.nn.softmax(jnp.where(causal, S, -jnp.inf), axis=-1) if sigma == "softmax" else jnp.where(causal, S, 0.0)
    H = W @ X @ V
    P, T = prompt.shape[0], trace.shape[0]
    lp = jax.nn.log_softmax(H[P - 1: P - 1 + T], axis=-1)[jnp.arange(T), trace]
    return jnp.sum(jnp.where(jnp.arange(T) < length, lp, 0.0))


def _enumerate(N, T, has_out):
    """All distinct trajectories: sequences whose tokens after the answer are 0 (one per prefix)."""
    seqs = jnp.array(list(itertools.product(range(N), repeat=T)), jnp.int32)
    _, lengths = jax.vmap(ch.final_answer, in_axes=(0, None))(seqs, has_out)
    after = jnp.arange(T)[None, :] >= lengths[:, None]
    keep = np.asarray(jnp.all(jnp.where(after, seqs == 0, True), axis=1))
    return seqs[keep]


def _tiny_case(parameterisation, key=0):
    N, n, T = 6, 3, 3  # two chains of 3 vertices, complexity 2, 3 emitted tokens
    inst = ch.sample_instance(jax.random.PRNGKey(key), N, n, 2)
    theta = jnp.array([0.7, -0.3, 0.2, 0.4, -0.5])
    params = {"theta": theta} if parameterisation == "tied" else {
        "A": ch.tied_attention(theta, N) + 0.3 * jax.random.normal(jax.random.PRNGKey(7), (N, ch.vocab_size(N)))}
    return N, T, inst, params


def _allclose(a, b):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-8, atol=1e-12), a, b)


@pytest.mark.parametrize("parameterisation,sigma", [("tied", "softmax"), ("full", "identity")])
def test_reinforce_expectation_equals_exact_gradient(parameterisation, sigma):
    N, T, inst, params = _tiny_case(parameterisation)
    V = ch.value_matrix(N, 3.0, "head", jnp.float64)
    trajs = _enumerate(N, T, inst.has_out)
    answers, lengths = jax.vmap(ch.final_answer, in_axes=(0, None))(trajs, inst.has_out)
    R = ch.is_correct(answers, inst.answer).astype(jnp.float64)
    assert 0 < float(R.sum()) < len(R)

    # the library's log-probabilities equal the formula's, and the trajectories exhaust the mass
    A = ch.attention_matrix(params, N)
    lp = jax.vmap(lambda t, l: ch.trace_log_prob(A, V, inst.prompt, t, l, sigma))(trajs, lengths)
    naive = jax.vmap(_naive_log_prob, in_axes=(None, None, None, None, 0, 0, None))
    np.testing.assert_allclose(lp, naive(params, V, N, inst.prompt, trajs, lengths, sigma), rtol=1e-10, atol=1e-12)
    pi = jnp.exp(lp)
    np.testing.assert_allclose(jnp.sum(pi), 1.0, rtol=1e-10)

    # exact objective J = sum_tau pi(tau) R(tau) by the formula; its gradient by autodiff
    exact = jax.grad(lambda p: jnp.sum(jnp.exp(naive(p, V, N, inst.prompt, trajs, lengths, sigma)) * R))(params)
    assert float(jnp.max(jnp.abs(jax.tree_util.tree_leaves(exact)[0]))) > 1e-3  # non-trivial

    # the estimator on one episode with advantage R - b, for every trajectory, weighted by pi
    def g_one(t, l, adv):
        return ch.policy_gradient(params, V, N, inst.prompt[None], t[None], l[None], adv[None], sigma)

    estimates = jax.jit(jax.vmap(g_one))
    for b in (0.0, 0.37):  # any baseline independent of the episode: unbiased
        gs = estimates(trajs, lengths, R - b)
        _allclose(jax.tree_util.tree_map(lambda g: jnp.tensordot(pi, g, axes=1), gs), exact)

    # batches of two with the leave-one-out baseline: the batch estimator is the mean of the
    # single-episode ones with advantages R_a - R_b and R_b - R_a; over all pairs its expectation
    # is grad J - E[R] E[grad log pi] = grad J, as E[grad log pi] = 0
    score = estimates(trajs, lengths, jnp.ones_like(R))  # grad log pi per trajectory
    _allclose(jax.tree_util.tree_map(lambda g: jnp.tensordot(pi, g, axes=1), score),
              jax.tree_util.tree_map(jnp.zeros_like, exact))
    rng = np.random.default_rng(0)
    for a, b in rng.integers(0, len(R), size=(3, 2)):
        r = jnp.stack([R[a], R[b]])
        batch = ch.policy_gradient(params, V, N, jnp.stack([inst.prompt] * 2), trajs[jnp.array([a, b])],
                                   lengths[jnp.array([a, b])], r - ch.leave_one_out_baseline(r), sigma)
        by_hand = jax.tree_util.tree_map(lambda g, a=a, b=b: 0.5 * ((R[a] - R[b]) * g[a] + (R[b] - R[a]) * g[b]), score)
        _allclose(batch, by_hand)
    pair = jax.tree_util.tree_map(
        lambda g: (
            0.5
            * jnp.einsum(
                "i,j,ij...->...",
                pi,
                pi,
                (R[:, None] - R[None, :])[..., *([None] * (g.ndim - 1))] * (g[:, None] - g[None, :]),
            )
        ),
        score,
    )
    _allclose(pair, exact)


def test_sampler_follows_the_policy():
    """Empirical frequencies of sampled answers match the enumerated probabilities."""
    N, T, inst, params = _tiny_case("tied", key=1)
    V = ch.value_matrix(N, 3.0, "head", jnp.float64)
    A = ch.attention_matrix(params, N)
    n = 4000
    sample = jax.jit(jax.vmap(lambda k: ch.sample_trace(k, A, V, inst.prompt, T)))
    traces = sample(jax.random.split(jax.random.PRNGKey(0), n))
    answers, _ = jax.vmap(ch.final_answer, in_axes=(0, None))(traces, inst.has_out)
    trajs = _enumerate(N, T, inst.has_out)
    a2, l2 = jax.vmap(ch.final_answer, in_axes=(0, None))(trajs, inst.has_out)
    pi = jnp.exp(jax.vmap(lambda t, l: ch.trace_log_prob(A, V, inst.prompt, t, l))(trajs, l2))
    for v in (ch.NO_ANSWER, *range(N)):  # distribution of the final answer
        p = float(jnp.sum(jnp.where(a2 == v, pi, 0.0)))
        f = float(jnp.mean(answers == v))
        assert abs(f - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-9, (v, f, p)
    assert float(jnp.sum(jnp.where(a2 == ch.NO_ANSWER, 0.0, pi))) > 0.3


# ------------------------------------------------------------------------------------------
# the experiment, small
# ------------------------------------------------------------------------------------------

SMALL = dict(steps=150, batch=64, n_eval=200, seeds=(0, 1), curve_points=50)
SIMPLE = exp.Config(train_complexities=(1, 2, 3), test_complexities=(1, 3, 6), test_chain_len=7, **SMALL)
ONLY3 = dataclasses.replace(SIMPLE, train_weights=(0.0, 0.0, 1.0))  # same compiled program, other weights


@pytest.fixture(scope="module")
def small_runs():
    return exp.run(SIMPLE), exp.run(ONLY3)


def test_small_experiment_simple_examples_help_and_runs_are_deterministic(small_runs):
    r1, r3 = small_runs
    # trained on 1-3 (chains of 4): traverses chains of 7 at complexities 1, 3 and 6
    assert min(r1.metrics["accuracy"]) > 0.9 and min(r1.metrics["traversal"]) > 0.85
    # trained only on complexity 3, same budget: clearly worse on complexity 3
    acc3 = np.asarray(r3.metrics["accuracy_per_complexity"])[:, 1]
    trav3 = np.asarray(r3.metrics["traversal_per_complexity"])[:, 1]
    assert acc3.max() < 0.6 and trav3.max() < 0.1
    assert r1.arrays["reward"].shape == (2, 150) and r1.arrays["reward"][:, -20:].mean() > 0.9
    again = exp.run(SIMPLE)
    assert again.metrics["accuracy_per_complexity"] == r1.metrics["accuracy_per_complexity"]
    assert np.array_equal(again.arrays["theta"], r1.arrays["theta"])


def test_report_rows_and_markdown(tmp_path, small_runs):
    store = Store(tmp_path / "runs")
    for cfg, rec in zip((SIMPLE, ONLY3), small_runs):
        store.save(exp.NAME, cfg, rec, preset="train1-3/test3", wall_seconds=1.0)
    rows = report_chains.rows(list(store.runs(exp.NAME)))
    assert len(rows) == 2
    row = next(r for r in rows if "train_weights" not in r["overrides"])
    assert row["experiment"] == "chains" and row["preset"] == "train1-3/test3"
    assert row["overrides"] == {
        "test_complexities": [1, 3, 6],
        "test_chain_len": 7,
        "steps": 150,
        "batch": 64,
        "n_eval": 200,
        "seeds": [0, 1],
        "curve_points": 50,
    }
    assert row["talk_accuracy"] is None  # overridden rows are not compared with the talk
    assert len(row["curve_reward"]) == 50 and row["curve_reward"][-1] > 0.9 > row["curve_reward"][0]
    assert row["accuracy_mean"] == pytest.approx(np.mean(small_runs[0].metrics["accuracy"]))
    runs_dir = tmp_path / "runs"
    written = report_chains.figures(list(store.runs(exp.NAME)), rows, runs_dir / "figures" / "chains")
    assert written == [runs_dir / "figures" / "chains" / "learning_curves.png"]
    md = report_chains.markdown(rows, tmp_path / "runs")
    assert (
        "| train1-3/test3 test_complexities=" in md
        and "![chains learning curves](figures/chains/learning_curves.png)" in md
    )
    assert (tmp_path / "runs" / "figures" / "chains" / "learning_curves.png").stat().st_size > 1000


def test_presets_are_the_talks_rows():
    assert list(exp.PRESETS) == list(exp.TALK)
    p = exp.PRESETS
    assert p["train1-3/test1-11"].chain_len("train") == 4 and p["train1-3/test1-11"].chain_len("test") == 12
    assert p["train3/test3"].train_complexities == (3,) and p["train3/test3"].steps == p["train1-3/test3"].steps
    assert len({c.steps for c in p.values()}) == 1  # one step budget for every row


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("train_complexities", (), "train_complexities must not be empty"),
        ("test_complexities", (0, 1), "test_complexities must be integers >= 1"),
        ("train_weights", (1.0,), "train_weights must have one weight"),
        ("n_vertices", 6, "n_vertices must be >= 2"),
        ("test_chain_len", 3, "test_chain_len must be 0"),
        ("lr", -1.0, "lr must be > 0"),
        ("sigma", "relu", "sigma must be"),
        ("batch", 1, "batch must be >= 2"),
        ("seeds", (), "seeds must not be empty"),
    ],
)
def test_bad_config_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(exp.PRESETS["train1-3/test3"], **{field: value})


def test_overrides_parse():
    o = parse_overrides(exp.Config, ["steps=10", "train_complexities=1,2", "sigma=identity", "forward_bias=0.25"])
    assert o == {"steps": 10, "train_complexities": (1, 2), "sigma": "identity", "forward_bias": 0.25}
