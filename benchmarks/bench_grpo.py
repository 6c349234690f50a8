"""One GRPO step of the equations experiment's small policy (docs/science.md, §5 GRPO) in our JAX code, beside
the same step written plainly in PyTorch on the same CPU, in the same process.

The step, as :func:`implicitbias.tasks.equations_rl.train_grpo` runs it, at the experiment's defaults
(d_model 64, 2 layers, 4 heads; 8 prompts x a group of 8 = 64 completions; temperature 0.9):

1. generation: ``max_new`` tokens for each of the 64 completions with the KV cache (ours:
   :func:`implicitbias.tasks.grpo.sample` under ``eqx.filter_jit``, a ``lax.scan`` over tokens; PyTorch: a
   prefill and a Python loop of one-token steps on an explicit cache, ``torch.no_grad()``). Every completion
   gets ``max_new`` tokens (``<pad>`` after its ``<eos>``) on both sides;
2. the update: the completion mask, the reference model's log-probabilities, the GRPO loss (trl 0.14's,
   :func:`implicitbias.tasks.grpo.grpo_loss`) and its gradient one prompt-group at a time, averaged
   (:func:`implicitbias.tasks.equations_rl.accumulated_gradient`; PyTorch: ``backward()`` per group into
   ``.grad``), gradient clipping at global norm 1 and AdamW (optax; ``torch.optim.AdamW`` +
   ``clip_grad_norm_``).

The rewards (decoding the completions and parsing them, the same Python code for both) are left out: the
advantages are computed once from the first JAX sample and given to both updates. Two sizes: ``mini``
(the family's mixture "1-7": prompts of ``prompt_length(15)`` = 93 tokens, ``max_new`` =
``solution_length(7) + 16`` = 82) and ``full`` (mixture "1-14": 177-token prompts, ``max_new`` 138).
Throughput: generation in generated tokens per second (completions x ``max_new`` / s), the update in
sequence tokens per second (completions x (prompt + ``max_new``) / s); ratios are JAX / PyTorch throughput
(> 1: JAX faster), the whole step being generation + update. Times are the best of a few repeats after
a warm-up call (JAX compilation excluded, and reported separately). JAX's 64-bit mode is on, as the
experiment's ``run`` has it (the policy itself is float32 either way).

What limits ours (measured here on 2 shared cores; the fixes are in the library, not in this script's use of
it: the XLA CPU flags tried (no multi-threaded Eigen, no XNNPACK, no YNN fusions, no fusion emitters) and JAX's
64-bit mode off moved the times by less than the machine's noise):

* the update: attention. :meth:`PolicyBlock.attend` materialises the ``L x L`` scores, masks them with
  ``where`` and takes a full softmax; PyTorch's ``scaled_dot_product_attention`` is a fused kernel that
  skips the masked half. ``--diagnose`` times the PyTorch update with attention written out as ours: it
  then takes about as long as ours (the rest of the update is on par);
* generation: the cache layout. ``Cache`` holds ``(n_layers, max_len, n_heads, head_dim)`` per sequence,
  so every cached step transposes each layer's whole keys and values to head-major order for the
  batched score and value products (XLA's compiled step shows the copies), and attends over all
  ``max_len`` positions under a mask: a step's cost grows with the cache length (the ``generation split``
  line; PyTorch's per-step cost barely does). A head-major ``(n_layers, n_heads, max_len, head_dim)``
  cache, tried outside the library, halved the full-size generation;
* the prefill: the same materialised attention as the update.

The PyTorch policy (:class:`TorchPolicy`) computes the same function as
:class:`implicitbias.models.policy.PolicyLM`: :func:`check_equivalence` copies our weights into it and
compares the full-forward logits, the cached prefill + steps, greedy samples, the GRPO loss and KL and the
accumulated gradient (tests/test_bench_grpo.py asserts them).

    python benchmarks/bench_grpo.py [--quick] [--diagnose] [--json PATH]
    (--quick: 2 repeats, mini only; --smoke: 1 repeat, mini only, for a test that the script runs)

Without PyTorch (the optional extra bench-torch: pip install torch==2.13.0) the script prints one line and
exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

# libgomp reads this when torch loads: with the default spinning policy torch's OpenMP threads stall on an
# oversubscribed machine (benchmarks/bench_torch_s4d.py measured it)
if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    print("bench_grpo: PyTorch is not installed; pip install torch==2.13.0 (the optional extra bench-torch)",
          file=sys.stderr)
    sys.exit(2)

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_knockout import best  # noqa: E402  (the house helper: fastest of n timings, blocked on)

from implicitbias.core.precision import enable_float64  # noqa: E402
from implicitbias.experiments import equations as ex  # noqa: E402
from implicitbias.models.policy import NORM_EPS, ROPE_BASE, PolicyLM  # noqa: E402
from implicitbias.tasks import equation_tokens as tk  # noqa: E402
from implicitbias.tasks import equations as eq  # noqa: E402
from implicitbias.tasks import equations_rl as rl  # noqa: E402
from implicitbias.tasks import grpo  # noqa: E402

SIZES = {"mini": ("mini", "1-7"), "full": ("full", "1-14")}  # name -> (family, mixture)


def cores() -> int:
    """The cores this process may run on: XLA's CPU backend sizes its thread pool by them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ---- the PyTorch policy ------------------------------------------------------------------------------------

class TorchBlock(nn.Module):
    """Pre-RMSNorm block: ``h + attn(norm1 h)``, then ``h + proj(gelu(fc(norm2 h)))``; no biases."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1, self.norm2 = nn.RMSNorm(d_model, eps=NORM_EPS), nn.RMSNorm(d_model, eps=NORM_EPS)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.fc = nn.Linear(d_model, 4 * d_model, bias=False)
        self.proj = nn.Linear(4 * d_model, d_model, bias=False)

    def heads(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Rotated queries and keys and the values ``(B, n_heads, L, head_dim)`` of ``h (B, L, d)``."""
        B, L, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        return rope(q, cos, sin), rope(k, cos, sin), v

    def attn_out(self, a: torch.Tensor) -> torch.Tensor:
        B, H, L, hd = a.shape
        return self.out(a.transpose(1, 2).reshape(B, L, H * hd))

    def mlp(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(self.norm2(h)), approximate="tanh"))  # jax.nn.gelu's default form


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, math_form: bool) -> torch.Tensor:
    """``softmax(q k^T / sqrt(hd)) v`` on ``(B, H, L, hd)``: PyTorch's fused kernel, or (``math_form``) the scores
    written out and masked as ours computes them (the ``--diagnose`` variant)."""
    if not math_form:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        Lq, Lk = s.shape[-2:]
        s = s.masked_fill(~torch.ones(Lq, Lk, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, -1) @ v


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split rotary positions on ``x (B, H, L, head_dim)``; ``cos, sin (L, head_dim / 2)``."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class TorchPolicy(nn.Module):
    """``tokens (B, L) -> logits (B, L, vocab)``: embedding, blocks, final RMSNorm, the head tied to the
    embedding; :meth:`prefill` / :meth:`step` with a per-layer key/value cache ``(B, n_heads, max_len, hd)``."""

    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(TorchBlock(d_model, n_heads) for _ in range(n_layers))
        self.norm_f = nn.RMSNorm(d_model, eps=NORM_EPS)
        half = d_model // n_heads // 2
        self.freq = ROPE_BASE ** (-torch.arange(half, dtype=torch.float32) / half)  # float32, as ours
        self.math_attention = False  # True: attention() with the scores written out (--diagnose)

    def angles(self, start: int, length: int):
        angle = torch.arange(start, start + length, dtype=torch.float32)[:, None] * self.freq[None]
        return torch.cos(angle), torch.sin(angle)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm_f(h) @ self.embedding.weight.T

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cos, sin = self.angles(0, tokens.shape[1])
        h = self.embedding(tokens)
        for blk in self.blocks:
            q, k, v = blk.heads(h, cos, sin)
            h = h + blk.attn_out(attention(q, k, v, True, self.math_attention))
            h = h + blk.mlp(h)
        return self.head(h)

    def prefill(self, tokens: torch.Tensor, max_len: int):
        """The full forward on ``tokens (B, L)``; its logits and a cache ``[(k, v)]`` for ``max_len`` positions."""
        B, L = tokens.shape
        cos, sin = self.angles(0, L)
        h = self.embedding(tokens)
        cache = []
        for blk in self.blocks:
            q, k, v = blk.heads(h, cos, sin)
            kc = k.new_zeros(B, k.shape[1], max_len, k.shape[3])
            vc = torch.zeros_like(kc)
            kc[:, :, :L], vc[:, :, :L] = k, v
            cache.append((kc, vc))
            h = h + blk.attn_out(attention(q, k, v, True, self.math_attention))
            h = h + blk.mlp(h)
        return self.head(h), cache

    def step(self, token: torch.Tensor, pos: int, cache) -> torch.Tensor:
        """Feed ``token (B,)`` at ``pos`` (the cache holds ``0 .. pos - 1``, written in place): logits ``(B, V)``."""
        cos, sin = self.angles(pos, 1)
        h = self.embedding(token)[:, None]
        for blk, (kc, vc) in zip(self.blocks, cache):
            q, k, v = blk.heads(h, cos, sin)
            kc[:, :, pos : pos + 1], vc[:, :, pos : pos + 1] = k, v
            a = attention(q, kc[:, :, : pos + 1], vc[:, :, : pos + 1], False, self.math_attention)
            h = h + blk.attn_out(a)
            h = h + blk.mlp(h)
        return self.head(h)[:, 0]


def torch_from_jax(model: PolicyLM) -> TorchPolicy:
    """A :class:`TorchPolicy` holding a copy of ``model``'s weights (ours are ``x @ W``; nn.Linear's ``x @ W^T``)."""
    vocab, d = model.embedding.shape
    tm = TorchPolicy(vocab, d, model.n_layers, model.blocks[0].n_heads)
    t = lambda a: torch.from_numpy(np.array(a, np.float32))
    with torch.no_grad():
        tm.embedding.weight.copy_(t(model.embedding))
        tm.norm_f.weight.copy_(t(model.norm_f))
        for tb, jb in zip(tm.blocks, model.blocks):
            tb.norm1.weight.copy_(t(jb.norm1))
            tb.norm2.weight.copy_(t(jb.norm2))
            for lin, w in ((tb.qkv, jb.w_qkv), (tb.out, jb.w_out), (tb.fc, jb.w_fc), (tb.proj, jb.w_proj)):
                lin.weight.copy_(t(w).T)
    return tm


def torch_grads_like_jax(tm: TorchPolicy) -> dict:
    """The torch gradients under our parameter names, in our layout."""
    g = lambda p: p.grad.detach().numpy()
    out = {"embedding": g(tm.embedding.weight), "norm_f": g(tm.norm_f.weight)}
    for i, tb in enumerate(tm.blocks):
        out |= {f"blocks[{i}].norm1": g(tb.norm1.weight), f"blocks[{i}].norm2": g(tb.norm2.weight),
                f"blocks[{i}].w_qkv": g(tb.qkv.weight).T, f"blocks[{i}].w_out": g(tb.out.weight).T,
                f"blocks[{i}].w_fc": g(tb.fc.weight).T, f"blocks[{i}].w_proj": g(tb.proj.weight).T}
    return out


def jax_grads_named(g) -> dict:
    out = {"embedding": np.asarray(g.embedding), "norm_f": np.asarray(g.norm_f)}
    for i, b in enumerate(g.blocks):
        out |= {f"blocks[{i}].{n}": np.asarray(getattr(b, n))
                for n in ("norm1", "norm2", "w_qkv", "w_out", "w_fc", "w_proj")}
    return out


# ---- GRPO in PyTorch ---------------------------------------------------------------------------------------

@torch.no_grad()
def torch_sample(model: TorchPolicy, prompts: torch.Tensor, max_new: int, temperature: float, eos: int, pad: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Completions ``(B, max_new)`` as :func:`implicitbias.tasks.grpo.sample` draws them: the first token from
    the prefill, then ``max_new - 1`` cached steps; ``pad`` after a completion's ``eos``."""
    B, Lp = prompts.shape
    logits, cache = model.prefill(prompts, Lp + max_new)

    def draw(lg):
        if temperature == 0:
            return lg.argmax(-1)
        return torch.multinomial(torch.softmax(lg / temperature, -1), 1, generator=generator)[:, 0]

    tok = draw(logits[:, -1])
    done = torch.zeros(B, dtype=torch.bool)
    out = [tok]
    for i in range(max_new - 1):
        lg = model.step(tok, Lp + i, cache)
        done |= tok == eos
        tok = torch.where(done, pad, draw(lg))
        out.append(tok)
    return torch.stack(out, 1)


def torch_completion_mask(comps: torch.Tensor, eos: int) -> torch.Tensor:
    is_eos = (comps == eos).long()
    return ((is_eos.cumsum(-1) - is_eos) == 0).float()


def torch_token_logprobs(model: TorchPolicy, prompts: torch.Tensor, comps: torch.Tensor) -> torch.Tensor:
    logits = model(torch.cat([prompts, comps], 1))[:, prompts.shape[1] - 1 : -1]
    return torch.log_softmax(logits, -1).gather(-1, comps[..., None])[..., 0]


def torch_grpo_loss(model, ref_lp, prompts, comps, mask, adv, beta: float):
    """trl 0.14's loss (:func:`implicitbias.tasks.grpo.grpo_loss`): ``(loss, mean KL)``."""
    logp = torch_token_logprobs(model, prompts, comps)
    d = ref_lp - logp
    kl = torch.exp(d) - d - 1.0
    per_token = -(torch.exp(logp - logp.detach()) * adv[:, None] - beta * kl)
    n = mask.sum(-1).clamp(min=1.0)
    return ((per_token * mask).sum(-1) / n).mean(), ((kl * mask).sum(-1) / n).mean()


class TorchGRPO:
    """The update of ``train_grpo`` in PyTorch: mask, reference log-probs, per-group backward, clip, AdamW."""

    def __init__(self, policy: TorchPolicy, ref: TorchPolicy, *, lr: float, beta: float, clip: float,
                 n_groups: int, eos: int):
        self.policy, self.ref, self.beta, self.clip, self.n_groups, self.eos = policy, ref, beta, clip, n_groups, eos
        self.opt = torch.optim.AdamW(policy.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def gradient(self, prompts, comps, adv):
        """Accumulate the batch's gradient into ``.grad`` group by group; returns ``(loss, kl)``."""
        mask = torch_completion_mask(comps, self.eos)
        with torch.no_grad():
            ref_lp = torch_token_logprobs(self.ref, prompts, comps)
        self.opt.zero_grad(set_to_none=True)
        G = prompts.shape[0] // self.n_groups
        loss_sum = kl_sum = 0.0
        for i in range(self.n_groups):
            sl = slice(i * G, (i + 1) * G)
            loss, kl = torch_grpo_loss(self.policy, ref_lp[sl], prompts[sl], comps[sl], mask[sl], adv[sl], self.beta)
            (loss / self.n_groups).backward()
            loss_sum += loss.item()
            kl_sum += kl.item()
        return loss_sum / self.n_groups, kl_sum / self.n_groups

    def update(self, prompts, comps, adv):
        out = self.gradient(prompts, comps, adv)
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.clip)
        self.opt.step()
        return out


# ---- our step, as train_grpo runs it -----------------------------------------------------------------------

class JaxGRPO:
    """``train_grpo``'s compiled pieces for ``model`` (also the reference): ``sampler``, ``ref_logp``,
    ``update`` (the same closures, the same ``filter_jit`` boundaries)."""

    def __init__(self, model: PolicyLM, settings: rl.GRPOSettings, eos: int):
        s = settings
        self.settings, self.eos = s, eos
        opt = rl._adamw(s.lr, s.steps, s.warmup, s.weight_decay, s.clip)
        self.params, static = eqx.partition(model, eqx.is_inexact_array)
        self.static = static
        self.state = opt.init(self.params)
        ref = model

        @eqx.filter_jit
        def ref_logp(prompts, comps):
            return jax.vmap(lambda p, c: grpo.token_logprobs(ref, p, c))(prompts, comps)

        @eqx.filter_jit
        def update(params, state, prompts, comps, mask, adv, ref_lp):
            g, loss, kl = rl.accumulated_gradient(params, static, ref_lp, prompts, comps, mask, adv, s.beta, s.prompts)
            u, state = opt.update(g, state, params)
            return optax.apply_updates(params, u), state, loss, kl

        self.ref_logp, self._update, self.sampler = ref_logp, update, eqx.filter_jit(grpo.sample)

    def sample(self, prompts, key, vocab):
        s = self.settings
        return self.sampler(eqx.combine(self.params, self.static), prompts, key, s.max_new, s.temperature,
                            vocab.eos, vocab.pad)

    def update(self, prompts, comps, adv):
        """One update from the current parameters (they are not replaced: every repeat does the same work)."""
        mask = grpo.completion_mask(comps, self.eos)
        return self._update(self.params, self.state, prompts, comps, mask, adv, self.ref_logp(prompts, comps))


# ---- shapes, checks, timings -------------------------------------------------------------------------------

def setup(size: str, seed: int = 0):
    """The experiment's defaults at ``size``: config, vocabulary, layout, ``max_new``, instances (each prompt
    repeated ``group`` times, as ``train_grpo`` lays a batch out) and their prompts ``(P G, Lp)``."""
    family, mixture = SIZES[size]
    cfg = ex.Config(family=family, mixtures=(mixture,))
    lay = cfg.layouts()[mixture]
    vocab = tk.Vocab(max(w.max_label for w in cfg.warmup_layouts()))  # as run_seed builds it
    max_new = cfg.max_new(lay.max_steps)
    uniq = eq.generate(lay, cfg.prompts, seed=seed)
    insts = [i for i in uniq for _ in range(cfg.group)]
    prompts = rl.encode(vocab, insts)
    return cfg, vocab, lay, max_new, insts, prompts


def settings_of(cfg: ex.Config, max_new: int) -> rl.GRPOSettings:
    return rl.GRPOSettings(steps=cfg.grpo_steps, prompts=cfg.prompts, group=cfg.group, lr=cfg.lr, beta=cfg.beta,
                           temperature=cfg.temperature, max_new=max_new)


def check_model(vocab_size: int, cfg: ex.Config, seed: int) -> PolicyLM:
    """A policy of the experiment's sizes with weights larger than the initialisation's and norms away from 1,
    so that the logits are O(1) (every weight and norm matters) and greedy choices are not near ties."""
    m = PolicyLM(vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, key=jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)

    def redraw(a):
        if a.ndim == 1:  # norm weights
            return jnp.asarray(1.0 + 0.2 * rng.normal(size=a.shape), jnp.float32)
        return jnp.asarray(rng.normal(size=a.shape) / math.sqrt(a.shape[0]), jnp.float32)

    m = jax.tree.map(lambda a: redraw(a) if eqx.is_inexact_array(a) else a, m)
    return eqx.tree_at(lambda t: t.embedding, m, m.embedding * math.sqrt(m.embedding.shape[0]) * 0.3)


def check_equivalence(size: str = "mini", seed: int = 0) -> dict:
    """Our policy and GRPO pieces against the PyTorch ones on a copy of the same weights (float32 both):

    * ``logits_max_abs``: full-forward logits on the 64 prompt + completion sequences, and ``logits_scale``
      (their largest magnitude);
    * ``logits_math_attention_max_abs``: the same with the ``--diagnose`` form of attention;
    * ``cached_logits_max_abs``: PyTorch prefill + cached steps fed our completions, against our full forward;
    * ``greedy_token_agreement``: the share of tokens where the two samplers at temperature 0 agree;
    * ``loss_rel``, ``kl_rel``: the GRPO loss and KL of the same tokens, random advantages (not summing to
      zero per group) and a reference model with other weights (a KL of O(1)); beta 0.04 (trl's default),
      so the KL term is not negligible next to the advantage term;
    * ``grad_max_rel``: the accumulated gradient (before clipping), per parameter relative to its largest entry.
    """
    cfg, vocab, lay, max_new, insts, prompts_np = setup(size, seed)
    model = check_model(len(vocab), cfg, seed)
    ref = check_model(len(vocab), cfg, seed + 1)
    tm, tref = torch_from_jax(model), torch_from_jax(ref)
    prompts = jnp.asarray(prompts_np)
    comps = jax.block_until_ready(eqx.filter_jit(grpo.sample)(model, prompts, jax.random.PRNGKey(seed), max_new,
                                                              1.0, vocab.eos, vocab.pad))
    seqs = jnp.concatenate([prompts, comps], 1)
    logits_j = np.asarray(eqx.filter_jit(lambda m, s: jax.vmap(m)(s))(model, seqs))
    tp, tc = torch.from_numpy(np.array(prompts_np, np.int64)), torch.from_numpy(np.array(comps, np.int64))
    with torch.no_grad():
        logits_t = tm(torch.cat([tp, tc], 1)).numpy()
        tm.math_attention = True
        logits_math = tm(torch.cat([tp, tc], 1)).numpy()
        tm.math_attention = False
        lg, cache = tm.prefill(tp, tp.shape[1] + max_new)
        rows = [lg[:, -1]]
        for i in range(max_new - 1):
            rows.append(tm.step(tc[:, i], tp.shape[1] + i, cache))
        cached = torch.stack(rows, 1).numpy()  # logits for completion tokens 0 .. max_new - 1
    Lp = prompts_np.shape[1]
    out = {"size": size, "sequences": int(seqs.shape[0]), "length": int(seqs.shape[1]),
           "logits_scale": float(np.abs(logits_j).max()),
           "logits_max_abs": float(np.abs(logits_t - logits_j).max()),
           "logits_math_attention_max_abs": float(np.abs(logits_math - logits_j).max()),
           "cached_logits_max_abs": float(np.abs(cached - logits_j[:, Lp - 1 : -1]).max())}

    greedy_j = np.asarray(eqx.filter_jit(grpo.sample)(model, prompts, jax.random.PRNGKey(0), max_new, 0.0,
                                                      vocab.eos, vocab.pad))
    greedy_t = torch_sample(tm, tp, max_new, 0.0, vocab.eos, vocab.pad).numpy()
    out["greedy_token_agreement"] = float(np.mean(greedy_j == greedy_t))

    beta = 0.04
    G, P = cfg.group, cfg.prompts
    adv = np.random.default_rng(seed).normal(size=P * G).astype(np.float32) + 0.5
    mask = grpo.completion_mask(comps, vocab.eos)
    ref_lp = jax.vmap(lambda p, c: grpo.token_logprobs(ref, p, c))(prompts, comps)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    g_j, loss_j, kl_j = eqx.filter_jit(rl.accumulated_gradient)(params, static, ref_lp, prompts, comps, mask,
                                                                 jnp.asarray(adv), beta, P)
    tg = TorchGRPO(tm, tref, lr=cfg.lr, beta=beta, clip=1.0, n_groups=P, eos=vocab.eos)
    loss_t, kl_t = tg.gradient(tp, tc, torch.from_numpy(adv))
    out["loss"], out["loss_rel"] = float(loss_j), abs(loss_t - float(loss_j)) / abs(float(loss_j))
    out["kl"], out["kl_rel"] = float(kl_j), abs(kl_t - float(kl_j)) / abs(float(kl_j))
    gj, gt = jax_grads_named(g_j), torch_grads_like_jax(tm)
    assert sorted(gj) == sorted(gt)
    out["grad_max_rel"] = max(float(np.abs(gt[n] - gj[n]).max() / np.abs(gj[n]).max()) for n in gj)
    out["eos_share"] = float(np.mean(np.asarray(comps) == vocab.eos))
    return out


def bench(size: str, repeats: int, seed: int = 0, diagnose: bool = False) -> dict:
    """Time generation and the update at ``size`` in JAX and in PyTorch (the module's docstring); generation
    is also split into the prefill (timed alone) and the cached steps. ``diagnose``: also the PyTorch update
    with its attention written out as ours computes it (the ``L x L`` scores materialised and masked)."""
    cfg, vocab, lay, max_new, insts, prompts_np = setup(size, seed)
    s = settings_of(cfg, max_new)
    model = PolicyLM(len(vocab), cfg.d_model, cfg.n_layers, cfg.n_heads, key=jax.random.PRNGKey(seed))
    B, Lp = prompts_np.shape
    prompts = jnp.asarray(prompts_np)
    jx = JaxGRPO(model, s, vocab.eos)
    key = jax.random.PRNGKey(seed + 1)

    t0 = time.perf_counter()
    comps = jax.block_until_ready(jx.sample(prompts, key, vocab))
    compile_sample = time.perf_counter() - t0
    fmt, ans = rl.rewards(vocab, np.asarray(comps), insts)
    adv_np = grpo.group_advantages((fmt + ans).reshape(s.prompts, s.group)).reshape(-1)
    if not np.any(adv_np):  # an untrained policy: all rewards 0; random advantages keep the loss non-trivial
        adv_np = np.random.default_rng(seed).normal(size=B)
    adv = jnp.asarray(adv_np, jnp.float32)
    t0 = time.perf_counter()
    jax.block_until_ready(jx.update(prompts, comps, adv))
    compile_update = time.perf_counter() - t0

    t_gen_j = best(lambda: jx.sample(prompts, key, vocab), repeats)
    t_upd_j = best(lambda: jx.update(prompts, comps, adv), repeats)
    prefill = eqx.filter_jit(lambda m, p: jax.vmap(lambda q: m.prefill(q, Lp + max_new))(p))
    jax.block_until_ready(prefill(model, prompts))
    t_pre_j = best(lambda: prefill(model, prompts), repeats)

    tm, tref = torch_from_jax(model), torch_from_jax(model)
    for p in tref.parameters():
        p.requires_grad_(False)
    tg = TorchGRPO(tm, tref, lr=s.lr, beta=s.beta, clip=s.clip, n_groups=s.prompts, eos=vocab.eos)
    tp = torch.from_numpy(np.array(prompts_np, np.int64))
    tc = torch.from_numpy(np.array(comps, np.int64))  # the same completions for both updates
    ta = torch.from_numpy(np.asarray(adv_np, np.float32))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    torch_sample(tm, tp, max_new, s.temperature, vocab.eos, vocab.pad, gen)
    tg.update(tp, tc, ta)
    first_torch = time.perf_counter() - t0
    t_gen_t = best(lambda: torch_sample(tm, tp, max_new, s.temperature, vocab.eos, vocab.pad, gen), repeats)
    t_upd_t = best(lambda: tg.update(tp, tc, ta), repeats)
    with torch.no_grad():
        t_pre_t = best(lambda: tm.prefill(tp, Lp + max_new), repeats)
    if diagnose:
        tm.math_attention = tref.math_attention = True
        tg.update(tp, tc, ta)
        t_upd_math = best(lambda: tg.update(tp, tc, ta), repeats)
        tm.math_attention = tref.math_attention = False

    gen_tokens, seq_tokens = B * max_new, B * (Lp + max_new)
    out = {"size": size, "mixture": SIZES[size][1], "completions": B, "prompts": s.prompts, "group": s.group,
           "prompt_tokens": Lp, "max_new": max_new, "vocab": len(vocab), "d_model": cfg.d_model,
           "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "repeats": repeats,
           "jax": {"generation_s": t_gen_j, "update_s": t_upd_j, "step_s": t_gen_j + t_upd_j, "prefill_s": t_pre_j,
                   "compile_generation_s": compile_sample, "compile_update_s": compile_update},
           "torch": {"generation_s": t_gen_t, "update_s": t_upd_t, "step_s": t_gen_t + t_upd_t, "prefill_s": t_pre_t,
                     "first_step_s": first_torch}}
    for side in ("jax", "torch"):
        d = out[side]
        d["generation_tokens_per_s"] = gen_tokens / d["generation_s"]
        d["update_tokens_per_s"] = seq_tokens / d["update_s"]
        # the prefill timed alone; the rest of generation spread over the max_new - 1 cached steps
        d["per_cached_step_s"] = max(d["generation_s"] - d["prefill_s"], 0.0) / (max_new - 1)
    if diagnose:
        out["torch"]["update_math_attention_s"] = t_upd_math
    out["ratio_jax_over_torch"] = {  # throughput ratios (> 1: JAX faster)
        "generation": t_gen_t / t_gen_j, "update": t_upd_t / t_upd_j,
        "step": (t_gen_t + t_upd_t) / (t_gen_j + t_upd_j)}
    return out


def describe(r: dict) -> list[str]:
    j, t, q = r["jax"], r["torch"], r["ratio_jax_over_torch"]
    B, n, Lp = r["completions"], r["max_new"], r["prompt_tokens"]
    return [
        f"{r['size']} (mixture {r['mixture']}): {r['prompts']} prompts x group {r['group']} = {B} completions, "
        f"prompt {Lp} tokens, max_new {n}, vocab {r['vocab']}; best of {r['repeats']}",
        f"  generation ({B} x {n} tokens)   JAX {1e3 * j['generation_s']:8.1f} ms = "
        f"{j['generation_tokens_per_s']:9,.0f} tok/s   PyTorch {1e3 * t['generation_s']:8.1f} ms = "
        f"{t['generation_tokens_per_s']:9,.0f} tok/s   JAX/PyTorch {q['generation']:.2f}x",
        f"  update ({B} x {Lp + n} tokens)      JAX {1e3 * j['update_s']:8.1f} ms = "
        f"{j['update_tokens_per_s']:9,.0f} tok/s   PyTorch {1e3 * t['update_s']:8.1f} ms = "
        f"{t['update_tokens_per_s']:9,.0f} tok/s   JAX/PyTorch {q['update']:.2f}x",
        f"  whole step (generation + update) JAX {1e3 * j['step_s']:8.1f} ms   PyTorch {1e3 * t['step_s']:8.1f} ms"
        f"   whole step JAX / PyTorch: {q['step']:.2f}x",
        f"  generation split: JAX prefill {1e3 * j['prefill_s']:.1f} ms + {1e3 * j['per_cached_step_s']:.2f} ms per "
        f"cached step (all {B} rows); PyTorch prefill {1e3 * t['prefill_s']:.1f} ms + "
        f"{1e3 * t['per_cached_step_s']:.2f} ms per step",
        f"  JAX compile + first call (excluded above): sampler {j['compile_generation_s']:.1f} s, update "
        f"{j['compile_update_s']:.1f} s; PyTorch first step {t['first_step_s']:.2f} s",
    ] + ([f"  diagnosis: PyTorch update with attention written out as ours (L x L scores materialised, masked, "
          f"softmax): {1e3 * t['update_math_attention_s']:.1f} ms (fused SDPA: {1e3 * t['update_s']:.1f} ms; "
          f"JAX {1e3 * j['update_s']:.1f} ms)"] if "update_math_attention_s" in t else [])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 repeats, mini only")
    ap.add_argument("--smoke", action="store_true", help="1 repeat, mini only (a test that the script runs)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--diagnose", action="store_true",
                    help="also time the PyTorch update with attention written out as ours (materialised scores)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    enable_float64()  # as the experiment's run (the policy is float32 regardless)
    repeats = 1 if args.smoke else 2 if args.quick else args.repeats
    sizes = ["mini"] if args.quick or args.smoke else ["mini", "full"]
    n = cores()
    torch.set_num_threads(n)
    print(f"jax {jax.__version__} {jax.devices()}, torch {torch.__version__}; the GRPO step of the equations "
          "experiment's policy (d_model 64, 2 layers, 4 heads), float32")
    print(f"threads: JAX's XLA CPU backend uses the {n} visible cores; torch.set_num_threads({n}), interop "
          f"{torch.get_num_interop_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; load average "
          f"(1, 5, 15 min) before: {tuple(round(x, 2) for x in os.getloadavg())}")
    print("times: best of repeats after a warm-up call (JAX compilation excluded); rewards (the same Python code "
          "for both) excluded; ratios are JAX / PyTorch throughput (> 1: JAX faster)", flush=True)
    check = check_equivalence("mini")
    print(f"equivalence (copied weights, mini shapes, {check['sequences']} x {check['length']} tokens): logits "
          f"max |diff| {check['logits_max_abs']:.1e} (scale {check['logits_scale']:.1f}; attention written out "
          f"{check['logits_math_attention_max_abs']:.1e}), cached steps "
          f"{check['cached_logits_max_abs']:.1e}, greedy tokens agree {100 * check['greedy_token_agreement']:.1f}%, "
          f"GRPO loss rel {check['loss_rel']:.1e}, KL rel {check['kl_rel']:.1e}, gradient max rel "
          f"{check['grad_max_rel']:.1e}", flush=True)
    results = []
    for size in sizes:
        r = bench(size, repeats, diagnose=args.diagnose)
        results.append(r)
        print("\n".join(describe(r)), flush=True)
    print(f"load average (1, 5, 15 min) after: {tuple(round(x, 2) for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": n, "cpus": os.cpu_count(), "jax": jax.__version__, "torch": torch.__version__,
                       "load_average_after": os.getloadavg(), "equivalence": check, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
