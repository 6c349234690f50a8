"""Chain identification with a one-layer attention model trained by outcome-based RL (docs/science.md §5).

The companion result (Ran-Milo, Alexander, Mendel, Cohen 2026): a one-layer transformer trained by
policy gradient on a 0/1 final-answer reward learns to *traverse* chains, and generalises to long
chains, only when the training data holds simple (short) examples. This module holds the pure
pieces, following the authors' code (``YuvMilo/trans-rl-experiments``, ``theoretically_inspired/``:
their model ``SimplifiedLinearTransformer``, data set ``PermutationListClassificationDataset`` and
training loop ``train_list_classifier``); :mod:`implicitbias.experiments.chains` wires them into an
experiment. Where this module differs from their code, the docstring says so.

Tokens (``N`` vertex labels). The authors' vocabulary is 5 special tokens (PAD, BOS, EOS, UNK, SEP),
then ``v0 .. v{N-1}``, then one token per ordered pair ``(i, j)``, ``i != j``, in row-major order.
The special tokens never occur in a prompt or a trace (the model gives them logit -1e9), so this
module numbers only the *context* tokens, ``D = N + N (N - 1) = N^2`` of them: vertex ``v`` is
``v``, edge ``(u, w)`` is ``N + u (N - 1) + w - [w > u]``; the authors' id is ours + 5.

An instance (their data set): a random permutation ``perm`` of the ``N`` labels; chain ``a`` is
``perm[0:n]``, chain ``b`` is ``perm[n:2n]``, the rest are isolated vertices. The prompt is chain
``a``'s ``n - 1`` edges in chain order, then chain ``b``'s, then the source vertex
``perm[n - 1 - c]``; ``c`` is the *complexity* (distance from the source to its terminal ``a_n``,
the target). *Sinks* are the vertices with no outgoing edge (both terminals and every isolated
vertex).

Trace: the model emits vertex tokens; the *final answer* is the first emitted sink; with none within
``T`` tokens there is no answer. Reward 1 iff the answer is the target. *Chain traversal*: the
source followed by the emitted tokens up to the answer is exactly the source's chain from the source.

Model (one layer, one-hot tokens, key matrix the identity). ``A: (N, D)`` (query vertex x context
token), ``V: (D, N)`` (context token x vertex), both trained. At a position ``i`` holding vertex
``q`` the logits over the ``N`` vertices are ``s * sum_{j <= i} w_ij V[x_j]`` with

* softmax attention: ``w_ij = softmax_j A[q, x_j]`` over the prefix (all its tokens are context);
* linear attention: ``w_ij = A[q, x_j]`` (their ``counts * A[q]``, summed over repeated tokens);

``s = 1 / tmp`` (their temperature: 1/20 softmax, 1/5 linear in ``exp_train_on_D``).

Tied model (an option): ``A[q, k] = theta_A[rel_A(q, k)]`` and ``V[k, v] = theta_V[rel_V(k, v)]``
with five relations each (:data:`RELATIONS_A`, :data:`RELATIONS_V`). Tied matrices are exactly those
invariant under relabelling the vertices, and the task is relabelling-invariant, so from a tied start
the expected gradient of the full model is tied and full gradient flow stays tied. On that subspace
``dL/dtheta_r = sum_{entries e of r} dL/dA_e``, while each entry moves by ``dL/dA_e`` under the full
flow: the tied flow equals the full one only if relation ``r``'s rate is divided by the number
``n_r`` of entries it covers (:func:`relation_counts`). :func:`tied_gradient_scale` applies that.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core.optim import make_optimizer
from ..core.validate import described, require, require_choices, require_seeds

# relation of a query vertex q to a key token k (tied A), and of a context token k to an output
# vertex v (tied V); the tied model has one number per relation
RELATIONS_A = ("edge_out", "edge_in", "edge_other", "vertex_self", "vertex_other")
RELATIONS_V = ("edge_tail", "edge_head", "edge_other", "vertex_self", "vertex_other")
NO_ANSWER = -1
N_SPECIAL = 5  # PAD, BOS, EOS, UNK, SEP in the authors' vocabulary, before the vertex tokens


# --------------------------------------------------------------------------------------------
# tokens
# --------------------------------------------------------------------------------------------


def vocab_size(n_vertices: int) -> int:
    """``D = N + N (N - 1) = N^2`` context tokens: vertices, then ordered pairs without self-loops."""
    return n_vertices * n_vertices


def edge_token(u, w, n_vertices: int):
    """Token of the directed edge ``(u, w)``, ``u != w`` (ints or int arrays of any shape)."""
    return n_vertices + u * (n_vertices - 1) + w - (w > u)


def edge_endpoints(token, n_vertices: int):
    """``(u, w)`` of edge tokens (any shape); meaningless for vertex tokens."""
    e = token - n_vertices
    u, r = e // (n_vertices - 1), e % (n_vertices - 1)
    return u, r + (r >= u)


def is_vertex(token, n_vertices: int):
    return token < n_vertices


def authors_token_strings(n_vertices: int) -> list[str]:
    """Our context tokens as the authors' strings (``'v3'``, ``'(2,5)'``), in our numbering."""
    out = [f"v{v}" for v in range(n_vertices)]
    u, w = edge_endpoints(np.arange(n_vertices, vocab_size(n_vertices)), n_vertices)
    return out + [f"({a},{b})" for a, b in zip(u.tolist(), w.tolist())]


def detokenize(prompt, n_vertices: int) -> str:
    """Human-readable prompt, e.g. ``(1,2) (2,3) (5,6) | 1``."""
    parts = []
    for t in (int(t) for t in prompt):
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
    """One instance (shapes for chain length ``n``; batched instances add a leading axis).

    prompt: (2(n-1)+1,) int32 tokens; chains: (2, n) vertex labels, the source lies in chains[0];
    start: () source vertex; answer: () its chain's terminal; complexity: () int in 1..n-1;
    path: (n-1,) the traversal ``a_{n-c+1} .. a_n`` padded with -1; has_out: (N,) bool, vertices
    with an outgoing edge (the others are the sinks).
    """

    prompt: jax.Array
    chains: jax.Array
    start: jax.Array
    answer: jax.Array
    complexity: jax.Array
    path: jax.Array
    has_out: jax.Array


def sample_complexity(key, complexities: tuple[int, ...], weights=None):
    """One complexity drawn from ``complexities`` with probabilities ``weights`` (uniform if None)."""
    c = jnp.asarray(complexities, jnp.int32)
    p = None if weights is None else jnp.asarray(weights) / jnp.sum(jnp.asarray(weights))
    return jax.random.choice(key, c, p=p)


def sample_instance(key, n_vertices: int, chain_len: int, complexity, shuffle_edges: bool = False) -> Instance:
    """The authors' instance: a permutation of the ``N`` labels, chains ``perm[0:n]`` and
    ``perm[n:2n]``, edges in chain order (``shuffle_edges``: in random order; the model's output
    does not depend on the order), source ``perm[n - 1 - complexity]`` (their start index
    ``n - 1 - c``). ``complexity``: a traced int in ``1..n-1``."""
    k_lab, k_perm = jax.random.split(key)
    perm = jax.random.permutation(k_lab, n_vertices)
    order = jax.random.permutation(k_perm, 2 * (chain_len - 1)) if shuffle_edges else None
    return instance_from_permutation(perm, n_vertices, chain_len, complexity, order)


def instance_from_permutation(perm, n_vertices: int, chain_len: int, complexity, edge_order=None) -> Instance:
    """The instance of a permutation ``perm: (N,)`` of the labels (their data set's ``perm``):
    chains ``perm[0:n]`` and ``perm[n:2n]``, source ``perm[n - 1 - complexity]``; ``edge_order``: an
    optional permutation of the ``2(n-1)`` edges (None: chain order, as theirs)."""
    n = chain_len
    chains = jnp.asarray(perm)[: 2 * n].astype(jnp.int32).reshape(2, n)
    src = chains[:, :-1].reshape(-1)
    dst = chains[:, 1:].reshape(-1)
    if edge_order is not None:
        src, dst = src[edge_order], dst[edge_order]
    complexity = jnp.asarray(complexity, jnp.int32)
    start = chains[0, n - 1 - complexity]
    idx = jnp.arange(n - 1)
    path = jnp.where(idx < complexity, chains[0, jnp.clip(n - complexity + idx, 0, n - 1)], -1)
    has_out = jnp.zeros((n_vertices,), bool).at[src].set(True)
    prompt = jnp.concatenate([edge_token(src, dst, n_vertices), start[None]]).astype(jnp.int32)
    return Instance(prompt, chains, start, chains[0, n - 1], complexity, path.astype(jnp.int32), has_out)


@functools.partial(jax.jit, static_argnames=("batch", "n_vertices", "chain_len", "complexities"))
def sample_batch(
    key, batch: int, n_vertices: int, chain_len: int, complexities: tuple[int, ...], weights=None
) -> Instance:
    """``batch`` independent instances, complexities drawn from ``complexities`` / ``weights``."""
    kc, ki = jax.random.split(key)
    cs = jax.vmap(lambda k: sample_complexity(k, complexities, weights))(jax.random.split(kc, batch))
    return jax.vmap(lambda k, c: sample_instance(k, n_vertices, chain_len, c))(jax.random.split(ki, batch), cs)


# --------------------------------------------------------------------------------------------
# the model: full and tied parameters
# --------------------------------------------------------------------------------------------


def relation_table_A(n_vertices: int) -> np.ndarray:
    """``(N, D)`` int: relation (index into :data:`RELATIONS_A`) of query vertex q to key token k."""
    N = n_vertices
    q = np.arange(N)[:, None]
    k = np.arange(vocab_size(N))[None, :]
    u, w = edge_endpoints(np.maximum(k, N), N)
    edge_rel = np.where(u == q, 0, np.where(w == q, 1, 2))
    vert_rel = np.where(k == q, 3, 4)
    return np.where(k < N, vert_rel, edge_rel).astype(np.int32)


def relation_table_V(n_vertices: int) -> np.ndarray:
    """``(D, N)`` int: relation (index into :data:`RELATIONS_V`) of context token k to vertex v."""
    N = n_vertices
    k = np.arange(vocab_size(N))[:, None]
    v = np.arange(N)[None, :]
    u, w = edge_endpoints(np.maximum(k, N), N)
    edge_rel = np.where(u == v, 0, np.where(w == v, 1, 2))
    vert_rel = np.where(k == v, 3, 4)
    return np.where(k < N, vert_rel, edge_rel).astype(np.int32)


def relation_counts(n_vertices: int) -> dict[str, np.ndarray]:
    """Entries covered by each relation: ``{"A": (5,), "V": (5,)}`` (at N = 24 ``edge_other`` of A
    covers 24*23*22 = 12,144 entries, ``edge_out`` 24*23 = 552)."""
    return {
        "A": np.bincount(relation_table_A(n_vertices).ravel(), minlength=5),
        "V": np.bincount(relation_table_V(n_vertices).ravel(), minlength=5),
    }


def matrices(params: dict, n_vertices: int) -> tuple[jax.Array, jax.Array]:
    """``(A: (N, D), V: (D, N))`` from ``{"A", "V"}`` (full) or ``{"theta_A": (5,), "theta_V": (5,)}``."""
    if "theta_A" in params:
        return (params["theta_A"][relation_table_A(n_vertices)], params["theta_V"][relation_table_V(n_vertices)])
    return params["A"], params["V"]


def init_params(key, model: str, n_vertices: int, std: float, dtype=jnp.float32) -> dict:
    """The authors' init: every entry of A and V ~ N(0, std^2) (their ``nn.init.normal_(std=1e-8)``);
    tied: every relation's number ~ N(0, std^2) (a relabelling-symmetric start)."""
    ka, kv = jax.random.split(key)
    if model == "tied":
        return {"theta_A": std * jax.random.normal(ka, (5,), dtype),
                "theta_V": std * jax.random.normal(kv, (5,), dtype)}
    if model != "full":
        raise ValueError(f"model must be 'full' or 'tied', got {model!r}")
    D = vocab_size(n_vertices)
    return {
        "A": std * jax.random.normal(ka, (n_vertices, D), dtype),
        "V": std * jax.random.normal(kv, (D, n_vertices), dtype),
    }


def tied_gradient_scale(n_vertices: int, dtype=jnp.float32) -> dict:
    """Per-relation factors ``1 / n_r`` for the tied parameters' gradients (see the module docstring):
    then one tied SGD step is the full SGD step averaged over each relation's entries."""
    c = relation_counts(n_vertices)
    return {"theta_A": jnp.asarray(1.0 / c["A"], dtype), "theta_V": jnp.asarray(1.0 / c["V"], dtype)}


def project_to_tied(full: dict, n_vertices: int) -> dict:
    """Average of a full ``{"A", "V"}`` pytree over each relation's entries -> ``{"theta_A", "theta_V"}``."""
    out = {}
    tables = (("A", relation_table_A(n_vertices), "theta_A"), ("V", relation_table_V(n_vertices), "theta_V"))
    for name, table, key in tables:
        sums = jnp.zeros((5,), full[name].dtype).at[table.ravel()].add(full[name].ravel())
        out[key] = sums / np.bincount(table.ravel(), minlength=5)
    return out


def attention_logits(A, V, seq, query_pos, attention: str = "softmax", scale: float = 20.0):
    """Vertex logits at the query positions. A: (N, D); V: (D, N); seq: (L,) context tokens (queries
    must be vertex tokens); query_pos: (Q,) ints. Key ``j`` is visible to query ``i`` iff ``j <= i``.
    Returns (Q, N)."""
    L = seq.shape[0]
    scores = A[seq[query_pos][:, None], seq[None, :]]  # (Q, L)
    visible = jnp.arange(L)[None, :] <= query_pos[:, None]
    if attention == "softmax":
        weights = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-1)
    elif attention == "linear":
        weights = jnp.where(visible, scores, 0.0)
    else:
        raise ValueError(f"attention must be 'softmax' or 'linear', got {attention!r}")
    return scale * (weights @ V[seq])


# --------------------------------------------------------------------------------------------
# sampling and checkers
# --------------------------------------------------------------------------------------------


def sample_trace(key, A, V, prompt, n_steps: int, attention: str, scale: float, greedy: bool = False):
    """Emit ``n_steps`` vertex tokens autoregressively (sampled, or argmax if ``greedy``).

    prompt: (P,) tokens ending with the source. Returns (n_steps,) int32; tokens after the final
    answer are generated too but ignored (the authors stop writing there; the answer is the same).
    """
    P = prompt.shape[0]
    seq0 = jnp.concatenate([prompt, jnp.zeros((n_steps,), jnp.int32)])

    def step(seq, xs):
        t, k = xs
        h = attention_logits(A, V, seq, jnp.array([P - 1 + t]), attention, scale)[0]
        tok = jnp.argmax(h) if greedy else jax.random.categorical(k, h)
        return seq.at[P + t].set(tok.astype(jnp.int32)), tok.astype(jnp.int32)

    _, trace = jax.lax.scan(step, seq0, (jnp.arange(n_steps), jax.random.split(key, n_steps)))
    return trace


def final_answer(trace, has_out):
    """``(answer, length)``: the first emitted sink and the number of emitted tokens up to and
    including it; ``(NO_ANSWER, T)`` when there is none. trace: (T,); has_out: (N,) bool."""
    T = trace.shape[0]
    stops = ~has_out[jnp.clip(trace, 0, has_out.shape[0] - 1)]
    first = jnp.argmax(stops)
    found = stops[first]
    return jnp.where(found, trace[first], NO_ANSWER), jnp.where(found, first + 1, T)


def is_correct(answer, target):
    """Outcome reward: 1 iff the final answer is the terminal of the source's chain."""
    return (answer == target) & (answer != NO_ANSWER)


def is_traversal(trace, length, path, complexity):
    """True iff the emitted tokens up to the answer are exactly ``a_{n-c+1}, ..., a_n``.
    trace: (T,), length: (), path: (n-1,) padded with -1."""
    T, m = trace.shape[0], path.shape[0]
    K = min(T, m)
    idx = jnp.arange(K)
    match = jnp.where(idx < complexity, trace[:K] == path[:K], True)
    return (length == complexity) & jnp.all(match) & (complexity <= T)


def trace_log_prob(A, V, prompt, trace, length, attention: str, scale: float):
    """``log pi(trace)``: the sum over the first ``length`` emitted tokens of their log-probabilities
    (the authors' ``path_logprob_sum``), in one causal pass. Differentiable in A and V."""
    P, T = prompt.shape[0], trace.shape[0]
    seq = jnp.concatenate([prompt, trace])
    h = attention_logits(A, V, seq, P - 1 + jnp.arange(T), attention, scale)
    lp = jax.nn.log_softmax(h, axis=-1)[jnp.arange(T), trace]
    return jnp.sum(jnp.where(jnp.arange(T) < length, lp, 0.0))


# --------------------------------------------------------------------------------------------
# REINFORCE
# --------------------------------------------------------------------------------------------


def advantages(rewards, baseline: str):
    """``R - b``: ``"mean"`` the batch mean (the authors'; it includes the episode itself, so the
    estimator's expectation is ``(B - 1) / B`` times the gradient), ``"loo"`` the mean of the other
    episodes (unbiased), ``"none"`` no baseline."""
    B = rewards.shape[0]
    if baseline == "mean":
        return rewards - jnp.mean(rewards)
    if baseline == "loo":
        return rewards - (jnp.sum(rewards) - rewards) / (B - 1)
    if baseline == "none":
        return rewards
    raise ValueError(f"baseline must be 'mean', 'loo' or 'none', got {baseline!r}")


def reinforce_surrogate(params, n_vertices, prompts, traces, lengths, adv, attention, scale):
    """``mean_b adv_b log pi(trace_b)`` (the authors' loss with the sign flipped); its gradient is the
    REINFORCE estimate of the ascent direction. prompts (B, P), traces (B, T)."""
    A, V = matrices(params, n_vertices)
    lp = jax.vmap(lambda p, t, ln: trace_log_prob(A, V, p, t, ln, attention, scale))(prompts, traces, lengths)
    return jnp.mean(jax.lax.stop_gradient(adv) * lp)


def policy_gradient(params, n_vertices, prompts, traces, lengths, adv, attention="softmax", scale=20.0):
    """The REINFORCE estimate of ``grad_params E[R]`` (ascent), a pytree like params."""
    return jax.grad(reinforce_surrogate)(params, n_vertices, prompts, traces, lengths, adv, attention, scale)


# --------------------------------------------------------------------------------------------
# rollouts, training and evaluation (compiled)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """Static (hashable) description of one run; see :class:`implicitbias.experiments.chains.Config`."""

    n_vertices: int
    train_chain_len: int
    train_complexities: tuple[int, ...]  # the support; the weights are a runtime argument
    test_chain_lens: tuple[int, ...]
    test_complexities: tuple[tuple[int, ...], ...]  # per test chain length
    model: str
    attention: str
    scale: float  # 1 / temperature
    init_std: float
    optimizer: str
    lr: float
    baseline: str
    batch: int
    sub_batches: int
    steps_per_epoch: int
    epochs: int
    early_stop: bool
    max_new_tokens: int
    test_max_new_tokens: tuple[int, ...]  # per test chain length
    n_val: int
    n_eval: int
    dtype: str = "float32"


class Rollout(NamedTuple):
    traces: jax.Array  # (B, T)
    lengths: jax.Array  # (B,)
    answers: jax.Array  # (B,)
    rewards: jax.Array  # (B,) float
    valid: jax.Array  # (B,) bool: reached a sink
    traversals: jax.Array  # (B,) bool


def rollout(key, A, V, inst: Instance, n_steps: int, attention: str, scale: float, greedy: bool = False) -> Rollout:
    """One trace per instance of a batch, scored."""
    B = inst.prompt.shape[0]
    traces = jax.vmap(lambda k, p: sample_trace(k, A, V, p, n_steps, attention, scale, greedy))(
        jax.random.split(key, B), inst.prompt
    )
    answers, lengths = jax.vmap(final_answer)(traces, inst.has_out)
    rewards = is_correct(answers, inst.answer).astype(A.dtype)
    trav = jax.vmap(is_traversal)(traces, lengths, inst.path, inst.complexity)
    return Rollout(traces, lengths, answers, rewards, answers != NO_ANSWER, trav)


def greedy_scores(A, V, inst: Instance, n_steps: int, attention: str, scale: float, max_c: int) -> dict:
    """The authors' validation: greedy traces; counts per complexity ``1..max_c`` (index c - 1) of
    instances, of valid ones (a sink reached), correct and traversing ones. Each (max_c,) float."""
    ro = rollout(jax.random.PRNGKey(0), A, V, inst, n_steps, attention, scale, greedy=True)
    onehot = jax.nn.one_hot(inst.complexity - 1, max_c, dtype=jnp.float32)  # (B, max_c)
    return {
        "n": onehot.sum(0),
        "valid": onehot.T @ ro.valid.astype(jnp.float32),
        "correct": onehot.T @ ro.rewards.astype(jnp.float32),
        "traversal": onehot.T @ ro.traversals.astype(jnp.float32),
    }


def train(spec: Spec, key, weights) -> tuple[dict, dict]:
    """The authors' ``train_list_classifier``: epochs of ``steps_per_epoch`` Adam steps; each step
    samples ``batch`` episodes in ``sub_batches`` sub-batches (baseline per sub-batch; gradient = mean
    of the sub-batch estimates), then greedy validation on a fixed set of ``n_val`` instances of the
    training distribution; with ``early_stop``, stop after the first epoch where every valid sampled
    training episode and every valid validation episode was correct. Differences: fresh instances per
    step instead of one fixed set of ``steps_per_epoch * batch`` reshuffled per epoch.

    Returns the final params and per-epoch curves (NaN after the stop): ``train_accuracy``,
    ``val_accuracy``, ``val_traversal`` (epochs,), and ``epochs_run`` (). Pure in ``key``: vmap it.
    """
    N, dtype = spec.n_vertices, jnp.dtype(spec.dtype)
    k_init, k_val, k_loop = jax.random.split(key, 3)
    params = init_params(k_init, spec.model, N, spec.init_std, dtype)
    opt = make_optimizer(spec.optimizer, spec.lr)
    g_scale = tied_gradient_scale(N, dtype) if spec.model == "tied" else None
    sub_B = spec.batch // spec.sub_batches
    T, max_c = spec.max_new_tokens, spec.train_chain_len - 1
    val = sample_batch(k_val, spec.n_val, N, spec.train_chain_len, spec.train_complexities, weights)

    def sub_step(params, k):
        k_data, k_roll = jax.random.split(k)
        A, V = matrices(params, N)
        inst = sample_batch(k_data, sub_B, N, spec.train_chain_len, spec.train_complexities, weights)
        ro = rollout(k_roll, A, V, inst, T, spec.attention, spec.scale)
        adv = advantages(ro.rewards, spec.baseline)
        g = policy_gradient(params, N, inst.prompt, ro.traces, ro.lengths, adv, spec.attention, spec.scale)
        stats = jnp.stack([jnp.sum(ro.rewards), jnp.sum(ro.valid.astype(ro.rewards.dtype))])
        return g, stats

    def opt_step(carry, k):
        params, opt_state = carry

        def acc(gsum, kk):
            g, st = sub_step(params, kk)
            return jax.tree_util.tree_map(jnp.add, gsum, g), st

        zero = jax.tree_util.tree_map(jnp.zeros_like, params)
        gsum, stats = jax.lax.scan(acc, zero, jax.random.split(k, spec.sub_batches))
        g = jax.tree_util.tree_map(lambda x: x / spec.sub_batches, gsum)
        if g_scale is not None:
            g = jax.tree_util.tree_map(jnp.multiply, g, g_scale)
        updates, opt_state = opt.update(jax.tree_util.tree_map(jnp.negative, g), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), stats.sum(0)

    nan = jnp.full((spec.epochs,), jnp.nan, jnp.float32)

    def body(state):
        params, opt_state, e, _, curves = state
        keys = jax.random.split(jax.random.fold_in(k_loop, e), spec.steps_per_epoch)
        (params, opt_state), stats = jax.lax.scan(opt_step, (params, opt_state), keys)
        correct, valid = stats.sum(0)
        A, V = matrices(params, N)
        v = greedy_scores(A, V, val, T, spec.attention, spec.scale, max_c)
        vc, vv, vt = v["correct"].sum(), v["valid"].sum(), v["traversal"].sum()
        curves = {
            "train_accuracy": curves["train_accuracy"].at[e].set(correct / jnp.maximum(valid, 1)),
            "val_accuracy": curves["val_accuracy"].at[e].set(vc / jnp.maximum(vv, 1)),
            "val_traversal": curves["val_traversal"].at[e].set(vt / jnp.maximum(vv, 1)),
        }
        stop = spec.early_stop & (valid > 0) & (correct == valid) & (vv > 0) & (vc == vv)
        return params, opt_state, e + 1, stop, curves

    def cond(state):
        return (~state[3]) & (state[2] < spec.epochs)

    init = (params, opt.init(params), jnp.int32(0), jnp.bool_(False),
            {"train_accuracy": nan, "val_accuracy": nan, "val_traversal": nan})
    params, _, epochs_run, _, curves = jax.lax.while_loop(cond, body, init)
    return params, {**curves, "epochs_run": epochs_run}


def test_scores(spec: Spec, params: dict, key) -> dict:
    """The authors' test: per test chain length, ``n_eval`` fresh instances (complexities uniform over
    that length's test complexities), greedy traces of ``test_max_new_tokens``; counts per complexity
    (as :func:`greedy_scores`), each of shape (n_tests, max test chain length - 1)."""
    N = spec.n_vertices
    A, V = matrices(params, N)
    width = max(spec.test_chain_lens) - 1
    out = []
    for n, cs, T, k in zip(spec.test_chain_lens, spec.test_complexities, spec.test_max_new_tokens,
                           jax.random.split(key, len(spec.test_chain_lens))):
        inst = sample_batch(k, spec.n_eval, N, n, cs)
        out.append(greedy_scores(A, V, inst, T, spec.attention, spec.scale, width))
    return {name: jnp.stack([o[name] for o in out]) for name in out[0]}


@functools.lru_cache(maxsize=16)
def _compiled(spec: Spec):
    def one(seed, weights):
        k_train, k_eval = jax.random.split(jax.random.PRNGKey(seed))
        params, curves = train(spec, k_train, weights)
        return params, curves, test_scores(spec, params, k_eval)

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def train_and_evaluate(spec: Spec, seeds: tuple[int, ...], weights=None):
    """Train every seed in one vmapped, jitted program (compiled once per ``spec``) and evaluate it.
    ``weights``: probabilities over ``spec.train_complexities`` (uniform if None), a runtime input.
    Returns (params, curves, counts) with a leading seed axis."""
    w = jnp.ones(len(spec.train_complexities)) if weights is None else jnp.asarray(weights, float)
    return _compiled(spec)(jnp.asarray(seeds, jnp.uint32), w)


# The run's config (implicitbias.experiments.chains presets it; docs/science.md §5)


@dataclass(frozen=True)
class Config:
    """One run: a training distribution, test sets, the model and the budget."""

    train_complexities: tuple[int, ...] = field(metadata={
        "help": "distances from the source to its chain's end trained on (start index n - 1 - c), integers >= 1"})
    test_complexities: tuple[int, ...] = field(metadata={
        "help": "distances from the source to its chain's end tested on, integers >= 1"})
    seeds: tuple[int, ...] = described((42, 43, 44), "random seeds, one trained model each (integers in 0..2^32-1)")
    train_weights: tuple[float, ...] = described(
        (), "sampling weight of each train complexity (finite, >= 0); empty: uniform over train_complexities")
    train_chain_len: int = described(0, "length of the training chains; 0: max(train_complexities) + 1")
    test_chain_lens: tuple[int, ...] = described(
        (), "test chain lengths, each testing the test complexities below it; empty: max(test_complexities) + 1")
    n_vertices: int = described(
        0, "graph vertices N (<= 64); 0: 2 x the longest chain; more leaves isolated vertices")
    model: Literal["full", "tied"] = described(
        "full", "'full': the authors' (N, N^2) A and (N^2, N) V tables; 'tied': five numbers each, one per relation")
    attention: Literal["softmax", "linear"] = described(
        "softmax", "attention of the one-layer transformer: 'softmax' or 'linear'")
    temperature: float = described(
        0.0, "attention temperature; 0: 1/20 for softmax, 1/5 for linear (as exp_train_on_D)")
    init_std: float = described(1e-8, "standard deviation of the N(0, std^2) initialisation of A and V")
    optimizer: Literal["adam", "gd"] = described(
        "adam", "'adam' (the authors' Adam) or 'gd' (plain gradient descent)")
    lr: float = described(1e-2, "learning rate (> 0)")
    baseline: Literal["mean", "loo", "none"] = described(
        "mean", "REINFORCE baseline: 'mean' (sub-batch mean reward), 'loo' (mean of the others) or 'none'")
    batch: int = described(50_000, "episodes sampled per training step, split into sub_batches equal sub-batches")
    sub_batches: int = described(
        30, "sub-batches per step, of batch // sub_batches episodes each; the baseline is per sub-batch")
    steps_per_epoch: int = described(20, "training steps per epoch")
    epochs: int = described(300, "most epochs to train")
    early_stop: bool = described(True, "stop after the first epoch with 100% train and validation accuracy")
    max_new_tokens: int = described(
        0, "most tokens emitted per episode in training and validation; 0: train chain length + 1")
    test_max_new_tokens: int = described(0, "most tokens emitted per test episode; 0: test chain length + 1")
    n_val: int = described(1000, "validation instances (greedy decoding)")
    n_eval: int = described(1000, "test instances per test chain length (greedy decoding)")
    dtype: Literal["float32", "float64"] = described(
        "float32", "floating-point precision of the model and training: 'float32' or 'float64'")

    def __post_init__(self):
        require_choices(self)
        for name in ("train_complexities", "test_complexities"):
            cs = getattr(self, name)
            require(len(cs) > 0, f"{name} must not be empty")
            require(all(isinstance(c, int) and c >= 1 for c in cs), f"{name} must be integers >= 1, got {cs}")
            require(len(set(cs)) == len(cs), f"{name} must not repeat values, got {cs}")
        require_seeds(self.seeds)
        require(all(s < 2**32 for s in self.seeds), f"seeds must be integers in 0..2^32-1, got {self.seeds}")
        if self.train_weights:
            require(
                len(self.train_weights) == len(self.train_complexities),
                f"train_weights must have one weight per train complexity ({len(self.train_complexities)}), "
                f"got {self.train_weights}",
            )
            require(
                all(math.isfinite(w) and w >= 0 for w in self.train_weights) and sum(self.train_weights) > 0,
                f"train_weights must be finite, >= 0 and not all 0, got {self.train_weights}",
            )
        require(
            self.train_chain_len == 0 or self.train_chain_len > max(self.train_complexities),
            f"train_chain_len must be 0 (auto) or > max(train_complexities) = {max(self.train_complexities)}, "
            f"got {self.train_chain_len}",
        )
        require(all(isinstance(n, int) and n >= 2 for n in self.test_chain_lens),
                f"test_chain_lens must be integers >= 2, got {self.test_chain_lens}")
        for n in self.chain_lens_test():
            require(any(c < n for c in self.test_complexities),
                    f"test chain length {n} has no test complexity below it (test_complexities "
                    f"{self.test_complexities})")
        n_max = max(self.chain_len_train(), *self.chain_lens_test())
        require(self.n_vertices == 0 or self.n_vertices >= 2 * n_max,
                f"n_vertices must be 0 (auto) or >= 2 * the longest chain = {2 * n_max}, got {self.n_vertices}")
        require(self.n_vertices <= 64, f"n_vertices must be <= 64 (the vocabulary grows as N^2), got {self.n_vertices}")
        require(math.isfinite(self.temperature) and self.temperature >= 0,
                f"temperature must be 0 (auto) or > 0, got {self.temperature}")
        require(math.isfinite(self.init_std) and self.init_std >= 0, f"init_std must be >= 0, got {self.init_std}")
        require(math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.sub_batches >= 1, f"sub_batches must be >= 1, got {self.sub_batches}")
        require(self.batch >= 2 * self.sub_batches,
                f"batch must hold >= 2 episodes per sub-batch ({self.sub_batches} sub-batches), got {self.batch}")
        require(self.steps_per_epoch >= 1, f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.max_new_tokens >= 0 and self.test_max_new_tokens >= 0,
                "max_new_tokens and test_max_new_tokens must be >= 0 (0: chain length + 1)")
        require(self.n_val >= 1 and self.n_eval >= 1, f"n_val and n_eval must be >= 1, got {self.n_val}, {self.n_eval}")

    def chain_len_train(self) -> int:
        return self.train_chain_len or max(self.train_complexities) + 1

    def chain_lens_test(self) -> tuple[int, ...]:
        return self.test_chain_lens or (max(self.test_complexities) + 1,)

    def vertices(self) -> int:
        return self.n_vertices or 2 * max(self.chain_len_train(), *self.chain_lens_test())

    def complexities_at(self, n: int) -> tuple[int, ...]:
        """The test complexities of test chain length ``n``."""
        return tuple(c for c in self.test_complexities if c < n)

    def spec(self) -> Spec:
        """The static part of the run (every field but seeds and weights): one compilation per spec."""
        tests = self.chain_lens_test()
        return Spec(
            n_vertices=self.vertices(), train_chain_len=self.chain_len_train(),
            train_complexities=tuple(self.train_complexities), test_chain_lens=tests,
            test_complexities=tuple(self.complexities_at(n) for n in tests), model=self.model,
            attention=self.attention,
            scale=1.0 / (self.temperature or (1 / 20 if self.attention == "softmax" else 1 / 5)),
            init_std=self.init_std, optimizer=self.optimizer, lr=self.lr, baseline=self.baseline, batch=self.batch,
            sub_batches=self.sub_batches, steps_per_epoch=self.steps_per_epoch, epochs=self.epochs,
            early_stop=self.early_stop, max_new_tokens=self.max_new_tokens or self.chain_len_train() + 1,
            test_max_new_tokens=tuple(self.test_max_new_tokens or n + 1 for n in tests),
            n_val=self.n_val, n_eval=self.n_eval, dtype=self.dtype,
        )


def footprint_terms(c: Config) -> dict[str, int]:
    """Per seed: one sub-batch's teacher-forced attention (``T x (P + T)`` per episode, six such
    arrays with the gradient) and value rows, the ``(N, N^2)`` tables with Adam moments, the
    validation and test rollouts."""
    S, N, b = len(c.seeds), c.vertices(), 4 if c.dtype == "float32" else 8
    n = c.chain_len_train()
    T = c.max_new_tokens or n + 1
    L = 2 * (n - 1) + 1 + T
    sub = c.batch // c.sub_batches
    out = {
        f"a sub-batch's attention (T, P + T) with T={T}, {sub} episodes x {S} seeds": S * sub * (6 * T * L + L * N) * b,
        f"A and V tables (N, N^2) with gradients and Adam moments, N={N} x {S} seeds": S * 8 * N * N * N * b,
    }
    for m in c.chain_lens_test():
        Tm = c.test_max_new_tokens or m + 1
        Lm = 2 * (m - 1) + 1 + Tm
        out[f"test rollouts on chains of {m}: (P + T, N) value rows, T={Tm}, {c.n_eval} episodes x {S} seeds"] = (
            S * max(c.n_eval, c.n_val) * Lm * (N + 2) * b)
    return out


def footprint_bytes(config: Config) -> int:
    """A lower bound of the bytes a run of ``config`` holds at once (see :mod:`implicitbias.runtime.footprint`)."""
    return int(sum(footprint_terms(config).values()))

