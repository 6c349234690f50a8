"""Group Relative Policy Optimisation as early TRL computes it (trl 0.14.0 ``GRPOTrainer``, the authors'
trainer for the equation-chain row; docs/science.md, §5 GRPO), and a KV-cached sampler compiled with
``lax.scan``, for any policy with :class:`~implicitbias.models.policy.PolicyLM`'s ``prefill`` / ``step``.

For each prompt, ``G`` completions are sampled; with rewards ``r (n_prompts, G)``:

* advantages (:func:`group_advantages`): ``A = (r - mean_g r) / (std_g r + 1e-4)`` per group, the
  standard deviation with Bessel's correction (``torch.Tensor.std``'s default, as trl 0.14 calls it);
* per completion token ``t`` (:func:`grpo_loss`), with ``logp_t`` the policy's log-probability of the
  sampled token and ``ref_t`` the reference (warm-up) model's:
  ``l_t = -(exp(logp_t - sg(logp_t)) A - beta (exp(ref_t - logp_t) - (ref_t - logp_t) - 1))`` (the k3
  estimator of KL to the reference; ``sg`` stops the gradient, so the first term's gradient is
  ``A grad logp_t``); the loss is the mean over a completion's tokens (up to and including its first
  ``<eos>``), then over completions; one optimiser update per generation batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

ADV_EPS = 1e-4  # trl 0.14: (r - mean) / (std + 1e-4)


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """``rewards (n_prompts, G)`` -> advantages of the same shape (the module's docstring)."""
    r = np.asarray(rewards, np.float64)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must be (n_prompts, G) with G >= 2 completions per prompt, got {r.shape}")
    return (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + ADV_EPS)


def completion_mask(tokens: jax.Array, eos: int) -> jax.Array:
    """``tokens (..., T)`` -> float mask of the tokens up to and including the first ``eos`` (all if none)."""
    is_eos = tokens == eos
    after = jnp.cumsum(is_eos, axis=-1) - is_eos  # eos tokens strictly before t
    return (after == 0).astype(jnp.float32)


def token_logprobs(model, prompt: jax.Array, completion: jax.Array) -> jax.Array:
    """``log p(completion_t | prompt, completion_<t)`` for one sequence: ``prompt (Lp,)``,
    ``completion (T,)`` -> ``(T,)``, from one full forward of their concatenation."""
    seq = jnp.concatenate([prompt, completion])
    logits = model(seq)[prompt.shape[0] - 1 : -1]
    return jnp.take_along_axis(jax.nn.log_softmax(logits, -1), completion[:, None], -1)[:, 0]


def grpo_loss(model, ref_logp: jax.Array, prompts: jax.Array, completions: jax.Array, mask: jax.Array,
              advantages: jax.Array, beta: float) -> tuple[jax.Array, dict]:
    """The loss of the module's docstring and its parts. ``prompts (B, Lp)``, ``completions, ref_logp,
    mask (B, T)``, ``advantages (B,)``; returns ``(loss, {"kl": mean KL, ...})``."""
    logp = jax.vmap(lambda p, c: token_logprobs(model, p, c))(prompts, completions)
    d = ref_logp - logp
    kl = jnp.exp(d) - d - 1.0
    per_token = -(jnp.exp(logp - jax.lax.stop_gradient(logp)) * advantages[:, None] - beta * kl)
    n = jnp.maximum(mask.sum(-1), 1.0)
    loss = jnp.mean((per_token * mask).sum(-1) / n)
    return loss, {"kl": jnp.mean((kl * mask).sum(-1) / n)}


def sample(model, prompts: jax.Array, key: jax.Array, max_new: int, temperature: float, eos: int,
           pad: int) -> jax.Array:
    """Completions ``(B, max_new)`` of ``prompts (B, Lp)`` (one shared length), sampled at ``temperature``
    (0: greedy) with the policy's KV cache; after a completion's ``eos`` its tokens are ``pad``."""
    B, Lp = prompts.shape
    logits, cache = jax.vmap(lambda p: model.prefill(p, Lp + max_new))(prompts)

    def draw(k, lg):
        if temperature == 0:
            return jnp.argmax(lg, -1)
        return jax.random.categorical(k, lg / temperature, axis=-1)

    k0, key = jax.random.split(key)
    first = draw(k0, logits[:, -1])

    def step(carry, k):
        tok, done, cache, pos = carry
        lg, cache = jax.vmap(model.step, in_axes=(0, None, 0))(tok, pos, cache)
        nxt = draw(k, lg)
        done = done | (tok == eos)
        nxt = jnp.where(done, pad, nxt)
        return (nxt, done, cache, pos + 1), tok

    init = (first, jnp.zeros((B,), bool), cache, jnp.asarray(Lp, jnp.int32))
    (last, done, _, _), toks = jax.lax.scan(step, init, jax.random.split(key, max_new - 1))
    toks = jnp.concatenate([toks, last[None]], 0).T  # (B, max_new)
    return toks
