"""Chain identification with a one-layer attention model trained by outcome-based RL (SPEC §5).

The companion result (Ran-Milo, Alexander, Mendel, Cohen 2026): a one-layer transformer trained by
policy gradient on a 0/1 final-answer reward learns to *traverse* chains, and generalises to long
chains, only when the training data holds simple (short) examples. This module holds the pure
pieces; :mod:`implicitbias.experiments.chains` wires them into an experiment.

Vocabulary (``N`` vertex labels), tokens are integers:

* vertex ``v`` is token ``v`` (``0 <= v < N``);
* the directed edge ``(u, w)`` is the single token ``N + u N + w``; ``D = N + N^2`` tokens in all.

An instance: two disjoint chains of ``n`` vertices each, ``a_1 -> ... -> a_n`` and
``b_1 -> ... -> b_n``, vertex labels drawn afresh (without replacement) per example. The *prompt* is
the ``2(n-1)`` edge tokens in shuffled order, then the start vertex ``a_{n-c}``; ``c`` is the
*complexity* (distance from the start to its chain's terminal ``a_n``, the correct answer).

Trace format: the model emits vertex tokens one at a time, ``s_{t+1} ~ softmax(H_t)``. The *final
answer* is the first emitted vertex that has no outgoing edge in the prompt (a chain's terminal, or
a label not in the graph): there the walk cannot go on, so the model has committed. With no such
vertex within ``T`` emitted tokens the episode has no answer (reward 0). Reward: 1 iff the answer is
``a_n``. *Chain traversal*: the emitted tokens are exactly ``a_{n-c+1}, ..., a_n`` (one forward step
at a time, nothing else).

Model (one attention layer over one-hot tokens ``X``): ``H = sigma(Mask(X A X^T)) X V``, causal mask,
``sigma`` the row softmax (masked entries -inf) or the identity (masked entries 0). Queries at the
positions that generate are always vertex tokens (the start vertex and the emitted ones), so only the
vertex rows of ``A`` matter: ``A`` is stored as ``(N, D)``. ``V: (D, N)`` maps tokens to vertex
logits and is fixed: an edge ``(u, w)`` carries ``beta e_w`` ("head", the vertex it leads to) or
``beta (e_u + e_w)`` ("endpoints"); vertex tokens carry 0.

``A`` is either the full table (``"full"``) or tied across vertex labels (``"tied"``): its entry for
query vertex ``q`` and key token ``k`` depends only on the relation of ``q`` to ``k`` (see
:data:`RELATIONS`), five numbers. Tied matrices are exactly those invariant under relabelling the
vertices; as the task distribution is itself relabelling-invariant, the *expected* policy gradient
of a full ``A`` at a tied ``A`` is tied, so gradient flow on the full table from a tied init stays
tied: the tied model is the theory's full-``A`` flow on its invariant subspace.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

# relation of a query vertex q to a key token k; the tied A has one number per relation
RELATIONS = ("edge_out", "edge_in", "edge_other", "vertex_self", "vertex_other")
EDGE_OUT, EDGE_IN, EDGE_OTHER, VERTEX_SELF, VERTEX_OTHER = range(5)
NO_ANSWER = -1


# --------------------------------------------------------------------------------------------
# tokens
# --------------------------------------------------------------------------------------------

def edge_token(u, w, n_vertices: int):
    """Token id of the directed edge ``(u, w)`` (ints or int arrays of any shape)."""
    return n_vertices + u * n_vertices + w


def edge_endpoints(token, n_vertices: int):
    """``(u, w)`` of edge tokens (any shape); meaningless for vertex tokens."""
    e = token - n_vertices
    return e // n_vertices, e % n_vertices


def is_vertex(token, n_vertices: int):
    return token < n_vertices


def vocab_size(n_vertices: int) -> int:
    """``D = N + N^2``: vertex tokens, then one token per ordered pair (self-loops never occur)."""
    return n_vertices + n_vertices * n_vertices


def tokenize(edges, start, n_vertices: int) -> jax.Array:
    """Prompt ``(2(n-1) + 1,)``: edge tokens of ``edges: (E, 2)`` in the given order, then ``start``."""
    edges = jnp.asarray(edges)
    return jnp.concatenate([edge_token(edges[:, 0], edges[:, 1], n_vertices), jnp.asarray(start)[None]]).astype(
        jnp.int32
    )


def detokenize(prompt, n_vertices: int) -> str:
    """Human-readable prompt, e.g. ``(1,2) (3,4) (2,3) | 1``."""
    toks = [int(t) for t in prompt]
    parts = []
    for t in toks:
        if t < n_vertices:
            parts.append(f"| {t}")
        else:
            u, w = edge_endpoints(t, n_vertices)
            parts.append(f"({u},{w})")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# task generator
# --------------------------------------------------------------------------------------------


class Instance(NamedTuple):
    """One two-chain instance (shapes for chain length ``n``; batched instances add a leading axis).

    prompt: (2(n-1)+1,) int32 tokens; chains: (2, n) vertex labels, the start lies in chains[0];
    start: () vertex; answer: () terminal of the start's chain; complexity: () int in 1..n-1;
    path: (n-1,) the traversal ``a_{n-c+1} .. a_n`` padded with -1; has_out: (N,) bool, vertices that
    are the source of some edge in the prompt.
    """

    prompt: jax.Array
    chains: jax.Array
    start: jax.Array
    answer: jax.Array
    complexity: jax.Array
    path: jax.Array
    has_out: jax.Array


def sample_complexity(key, complexities: tuple[int, ...], weights=None):
    """One complexity drawn from ``complexities`` with probabilities ``weights`` (uniform if None;
    a traced array is fine)."""
    c = jnp.asarray(complexities, jnp.int32)
    p = None if weights is None else jnp.asarray(weights) / jnp.sum(jnp.asarray(weights))
    return jax.random.choice(key, c, p=p)


def sample_instance(key, n_vertices: int, chain_len: int, complexity) -> Instance:
    """Two disjoint chains of ``chain_len`` vertices with fresh labels, edges shuffled (SPEC §5).

    ``complexity`` (a traced int in ``1..chain_len-1``) puts the start at ``a_{n-c}`` (1-based).
    """
    n = chain_len
    k_lab, k_perm = jax.random.split(key)
    labels = jax.random.permutation(k_lab, n_vertices)[: 2 * n].astype(jnp.int32)
    chains = labels.reshape(2, n)
    src = chains[:, :-1].reshape(-1)
    dst = chains[:, 1:].reshape(-1)
    order = jax.random.permutation(k_perm, 2 * (n - 1))
    edges = jnp.stack([src[order], dst[order]], axis=1)
    complexity = jnp.asarray(complexity, jnp.int32)
    start = chains[0, n - 1 - complexity]
    idx = jnp.arange(n - 1)
    path = jnp.where(idx < complexity, chains[0, jnp.clip(n - complexity + idx, 0, n - 1)], -1)
    has_out = jnp.zeros((n_vertices,), bool).at[src].set(True)
    return Instance(
        tokenize(edges, start, n_vertices), chains, start, chains[0, n - 1], complexity, path.astype(jnp.int32), has_out
    )


@functools.partial(jax.jit, static_argnames=("batch", "n_vertices", "chain_len", "complexities"))
def sample_batch(
    key, batch: int, n_vertices: int, chain_len: int, complexities: tuple[int, ...], weights=None
) -> Instance:
    """``batch`` independent instances, complexities drawn from ``complexities`` / ``weights``."""
    kc, ki = jax.random.split(key)
    cs = jax.vmap(lambda k: sample_complexity(k, complexities, weights))(jax.random.split(kc, batch))
    return jax.vmap(lambda k, c: sample_instance(k, n_vertices, chain_len, c))(jax.random.split(ki, batch), cs)


# --------------------------------------------------------------------------------------------
# the one-layer model
# --------------------------------------------------------------------------------------------


def relation_table(n_vertices: int) -> jax.Array:
    """``(N, D)`` int: the relation (index into :data:`RELATIONS`) of query vertex q to key token k."""
    N = n_vertices
    q = jnp.arange(N)[:, None]
    k = jnp.arange(vocab_size(N))[None, :]
    u, w = edge_endpoints(k, N)
    edge_rel = jnp.where(u == q, EDGE_OUT, jnp.where(w == q, EDGE_IN, EDGE_OTHER))
    vert_rel = jnp.where(k == q, VERTEX_SELF, VERTEX_OTHER)
    return jnp.where(is_vertex(k, N), vert_rel, edge_rel).astype(jnp.int32)


def tied_attention(theta: jax.Array, n_vertices: int) -> jax.Array:
    """``A: (N, D)`` with ``A[q, k] = theta[relation(q, k)]``; ``theta: (5,)`` (order of RELATIONS)."""
    return theta[relation_table(n_vertices)]


def init_theta(forward_bias: float, dtype=jnp.float32) -> jax.Array:
    """Relabelling-symmetric init with a weak forward bias: ``theta = forward_bias e_{edge_out}``."""
    return jnp.zeros((len(RELATIONS),), dtype).at[EDGE_OUT].set(forward_bias)


def attention_matrix(params: dict, n_vertices: int) -> jax.Array:
    """``A: (N, D)`` from parameters ``{"theta": (5,)}`` (tied) or ``{"A": (N, D)}`` (full)."""
    if "theta" in params:
        return tied_attention(params["theta"], n_vertices)
    return params["A"]


def value_matrix(n_vertices: int, scale: float, kind: str = "head", dtype=jnp.float32) -> jax.Array:
    """Fixed ``V: (D, N)``: edge ``(u, w)`` -> ``scale e_w`` ("head") or ``scale (e_u + e_w)``
    ("endpoints"); vertex tokens -> 0."""
    N = n_vertices
    k = jnp.arange(vocab_size(N))
    u, w = edge_endpoints(k, N)
    v = jnp.arange(N)
    edge = k[:, None] >= N
    rows = w[:, None] == v[None, :]
    if kind == "endpoints":
        rows = rows | (u[:, None] == v[None, :])
    elif kind != "head":
        raise ValueError(f"value kind must be 'head' or 'endpoints', got {kind!r}")
    return jnp.where(edge & rows, scale, 0.0).astype(dtype)


def attention_logits(A, V, seq, query_pos, sigma: str = "softmax"):
    """``H`` at the query positions: ``sigma(Mask(X A X^T)) X V`` rows ``query_pos``.

    A: (N, D); V: (D, N); seq: (L,) tokens (queries must be vertex tokens); query_pos: (Q,) ints.
    Key ``j`` is visible to query ``i`` iff ``j <= query_pos[i]`` (causal). Returns (Q, N) logits.
    """
    L = seq.shape[0]
    q_tok = seq[query_pos]
    scores = A[q_tok[:, None], seq[None, :]]  # (Q, L)
    visible = jnp.arange(L)[None, :] <= query_pos[:, None]
    if sigma == "softmax":
        weights = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-1)
    elif sigma == "identity":
        weights = jnp.where(visible, scores, 0.0)
    else:
        raise ValueError(f"sigma must be 'softmax' or 'identity', got {sigma!r}")
    return weights @ V[seq]


# --------------------------------------------------------------------------------------------
# sampling and checkers
# --------------------------------------------------------------------------------------------


def sample_trace(key, A, V, prompt, n_steps: int, sigma: str = "softmax") -> jax.Array:
    """Emit ``n_steps`` vertex tokens autoregressively, ``s_{t+1} ~ softmax(H_t)``.

    prompt: (P,) tokens ending with the start vertex. Returns the trace (n_steps,) int32; tokens
    after the final answer are generated too but ignored by :func:`final_answer`.
    """
    P = prompt.shape[0]
    seq0 = jnp.concatenate([prompt, jnp.zeros((n_steps,), jnp.int32)])

    def step(seq, xs):
        t, k = xs
        h = attention_logits(A, V, seq, jnp.array([P - 1 + t]), sigma)[0]
        tok = jax.random.categorical(k, h).astype(jnp.int32)
        return seq.at[P + t].set(tok), tok

    _, trace = jax.lax.scan(step, seq0, (jnp.arange(n_steps), jax.random.split(key, n_steps)))
    return trace


def final_answer(trace, has_out):
    """``(answer, length)``: the first emitted vertex with no outgoing edge, and the number of
    emitted tokens up to and including it; ``(NO_ANSWER, T)`` when there is none.

    trace: (T,) vertex tokens; has_out: (N,) bool.
    """
    T = trace.shape[0]
    stops = ~has_out[jnp.clip(trace, 0, has_out.shape[0] - 1)]
    first = jnp.argmax(stops)
    found = stops[first]
    return jnp.where(found, trace[first], NO_ANSWER), jnp.where(found, first + 1, T)


def is_correct(answer, target):
    """Outcome reward: 1 iff the final answer is the terminal of the start's chain."""
    return (answer == target) & (answer != NO_ANSWER)


def is_traversal(trace, length, path, complexity):
    """True iff the emitted tokens are exactly the forward walk ``a_{n-c+1}, ..., a_n``.

    trace: (T,), length: () emitted tokens up to the answer, path: (n-1,) padded with -1.
    """
    T, m = trace.shape[0], path.shape[0]
    K = min(T, m)
    idx = jnp.arange(K)
    match = jnp.where(idx < complexity, trace[:K] == path[:K], True)
    return (length == complexity) & jnp.all(match) & (complexity <= T)


def trace_log_prob(A, V, prompt, trace, length, sigma: str = "softmax"):
    """``log pi(trace)``: sum over the first ``length`` emitted tokens of ``log softmax(H_t)[s_{t+1}]``
    computed in one causal pass (teacher forcing). Differentiable in ``A``."""
    P, T = prompt.shape[0], trace.shape[0]
    seq = jnp.concatenate([prompt, trace])
    h = attention_logits(A, V, seq, P - 1 + jnp.arange(T), sigma)
    lp = jax.nn.log_softmax(h, axis=-1)[jnp.arange(T), trace]
    return jnp.sum(jnp.where(jnp.arange(T) < length, lp, 0.0))


# --------------------------------------------------------------------------------------------
# REINFORCE
# --------------------------------------------------------------------------------------------


def leave_one_out_baseline(rewards):
    """``b_i = mean_{j != i} R_j``: independent of episode i, so the estimator stays unbiased."""
    B = rewards.shape[0]
    return (jnp.sum(rewards) - rewards) / (B - 1)


def reinforce_surrogate(params, V, n_vertices: int, prompts, traces, lengths, advantages, sigma="softmax"):
    """``mean_b adv_b log pi(trace_b)``; its gradient is the REINFORCE estimate of ``grad E[R]``
    when ``adv_b = R_b - b_b`` with ``b_b`` independent of episode b. prompts (B,P), traces (B,T)."""
    A = attention_matrix(params, n_vertices)
    lp = jax.vmap(lambda p, t, l: trace_log_prob(A, V, p, t, l, sigma))(prompts, traces, lengths)
    return jnp.mean(jax.lax.stop_gradient(advantages) * lp)


def policy_gradient(params, V, n_vertices, prompts, traces, lengths, advantages, sigma="softmax"):
    """The REINFORCE estimate of ``grad_params E[R]`` (ascent direction), a pytree like params."""
    return jax.grad(reinforce_surrogate)(params, V, n_vertices, prompts, traces, lengths, advantages, sigma)


# --------------------------------------------------------------------------------------------
# rollouts, training and evaluation (compiled)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """Static (hashable) description of one training + evaluation run; see the experiment's Config."""

    n_vertices: int
    train_chain_len: int
    train_complexities: tuple[int, ...]  # the support; the weights are a runtime argument
    test_chain_len: int
    test_complexities: tuple[int, ...]
    trace_factor: float
    parameterisation: str
    forward_bias: float
    value_kind: str
    value_scale: float
    sigma: str
    optimizer: str
    lr: float
    baseline: str
    batch: int
    steps: int
    n_eval: int
    dtype: str = "float32"

    def trace_len(self, chain_len: int) -> int:
        """Emitted-token budget ``T = ceil(trace_factor (n - 1))`` for chains of ``n`` vertices."""
        return max(1, int(-(-self.trace_factor * (chain_len - 1) // 1)))


def init_params(spec: Spec) -> dict:
    """Relabelling-symmetric init with a weak forward bias (tied, or its full-table expansion)."""
    theta = init_theta(spec.forward_bias, jnp.dtype(spec.dtype))
    if spec.parameterisation == "tied":
        return {"theta": theta}
    return {"A": tied_attention(theta, spec.n_vertices)}


class Rollout(NamedTuple):
    traces: jax.Array  # (B, T)
    lengths: jax.Array  # (B,)
    answers: jax.Array  # (B,)
    rewards: jax.Array  # (B,) float
    traversals: jax.Array  # (B,) bool


def rollout(key, A, V, inst: Instance, n_steps: int, sigma: str) -> Rollout:
    """Sample one trace per instance of a batch and score it."""
    B = inst.prompt.shape[0]
    traces = jax.vmap(lambda k, p: sample_trace(k, A, V, p, n_steps, sigma))(jax.random.split(key, B), inst.prompt)
    answers, lengths = jax.vmap(final_answer)(traces, inst.has_out)
    rewards = is_correct(answers, inst.answer).astype(A.dtype)
    trav = jax.vmap(is_traversal)(traces, lengths, inst.path, inst.complexity)
    return Rollout(traces, lengths, answers, rewards, trav)


def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    if name == "sgd":
        return optax.sgd(lr)
    if name == "adam":
        return optax.adam(lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def train(spec: Spec, key, weights=None) -> tuple[dict, dict]:
    """REINFORCE with a baseline for ``spec.steps`` steps of ``spec.batch`` episodes (one lax.scan);
    training complexities drawn from ``spec.train_complexities`` with ``weights`` (uniform if None).

    Returns the final params and per-step curves ``{"reward": (steps,), "traversal": (steps,)}``
    (means over the step's training batch, before the update). Pure in ``key``: vmap over seeds.
    """
    N = spec.n_vertices
    V = value_matrix(N, spec.value_scale, spec.value_kind, jnp.dtype(spec.dtype))
    T = spec.trace_len(spec.train_chain_len)
    opt = make_optimizer(spec.optimizer, spec.lr)
    params = init_params(spec)

    def step(carry, k):
        params, opt_state = carry
        k_data, k_roll = jax.random.split(k)
        inst = sample_batch(k_data, spec.batch, N, spec.train_chain_len, spec.train_complexities, weights)
        A = attention_matrix(params, N)
        ro = rollout(k_roll, A, V, inst, T, spec.sigma)
        if spec.baseline == "loo":
            adv = ro.rewards - leave_one_out_baseline(ro.rewards)
        else:
            adv = ro.rewards
        g = policy_gradient(params, V, N, inst.prompt, ro.traces, ro.lengths, adv, spec.sigma)
        updates, opt_state = opt.update(jax.tree_util.tree_map(jnp.negative, g), opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), (jnp.mean(ro.rewards), jnp.mean(ro.traversals.astype(jnp.float32)))

    (params, _), (rew, trav) = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, spec.steps))
    return params, {"reward": rew, "traversal": trav}


def evaluate(spec: Spec, params: dict, key) -> dict:
    """Accuracy and traversal rate per test complexity over ``spec.n_eval`` sampled episodes each,
    on chains of ``spec.test_chain_len`` vertices. Returns arrays of shape (len(test_complexities),)."""
    N = spec.n_vertices
    V = value_matrix(N, spec.value_scale, spec.value_kind, jnp.dtype(spec.dtype))
    A = attention_matrix(params, N)
    T = spec.trace_len(spec.test_chain_len)

    def one(c, k):
        k_data, k_roll = jax.random.split(k)
        inst = sample_batch(k_data, spec.n_eval, N, spec.test_chain_len, (c,))
        ro = rollout(k_roll, A, V, inst, T, spec.sigma)
        return jnp.mean(ro.rewards), jnp.mean(ro.traversals.astype(jnp.float32))

    keys = jax.random.split(key, len(spec.test_complexities))
    accs, travs = zip(*[one(c, k) for c, k in zip(spec.test_complexities, keys)])
    return {"accuracy": jnp.stack(accs), "traversal": jnp.stack(travs)}


@functools.lru_cache(maxsize=16)
def _compiled(spec: Spec):
    def one(seed, weights):
        k_train, k_eval = jax.random.split(jax.random.PRNGKey(seed))
        params, curves = train(spec, k_train, weights)
        return params, curves, evaluate(spec, params, k_eval)

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def train_and_evaluate(spec: Spec, seeds: tuple[int, ...], weights=None):
    """Train every seed in one vmapped, jitted program (compiled once per ``spec``) and evaluate it.
    ``weights``: probabilities over ``spec.train_complexities`` (uniform if None), a runtime input,
    so distributions over the same support share one compilation. Returns (params, curves, evals)
    with a leading seed axis."""
    w = jnp.ones(len(spec.train_complexities)) if weights is None else jnp.asarray(weights, float)
    return _compiled(spec)(jnp.asarray(seeds, jnp.uint32), w)


# --------------------------------------------------------------------------------------------
# learning curves
# --------------------------------------------------------------------------------------------


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis (window clipped at the start)."""
    c = np.cumsum(np.pad(x, [(0, 0)] * (x.ndim - 1) + [(1, 0)]), axis=-1)
    idx = np.arange(1, x.shape[-1] + 1)
    lo = np.maximum(idx - window, 0)
    return (c[..., idx] - c[..., lo]) / (idx - lo)


def steps_to_reward(reward: np.ndarray, level: float = 0.9, window: int = 50) -> list[int]:
    """Per seed, the first step at which the trailing ``window``-step mean training reward reaches
    ``level``; -1 if never. reward: (seeds, steps)."""
    sm = smooth(np.asarray(reward, float), window)
    hit = sm >= level
    return [int(np.argmax(h)) if h.any() else -1 for h in hit]
