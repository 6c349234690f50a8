"""Our loader and models against transformers' own Mamba-1 / Mamba-2 (an independent implementation):
tiny random Hugging Face models written with save_pretrained load to the same logits, and our
knockout (interp/knockout.py) equals one built on the HF side from their modules (Mamba-1: their
discretisation and a second scan; Mamba-2: a naive float64 implicit-attention matrix with the
(target, source) entries zeroed). Needs the hf extra (torch + transformers; make test-hf); skipped,
saying so, without it."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the hf extra is not installed (make test-hf installs torch)")
transformers = pytest.importorskip("transformers", reason="the hf extra is not installed (make test-hf)")

from implicitbias.models.checkpoints import load_lm  # noqa: E402

TOKENS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]  # 15: not a multiple of the Mamba-2 chunk (4)
# float32 through two implementations with different summation orders: they differ by a few ulps of
# the largest logit (measured 1-2 ulps: 2.4e-7 at |logit| 2.3 for Mamba-1 / Falcon, 3.9e-7 at 1.2 for
# Mamba-2). 40 ulps leaves room for other summation orders, not for a wrong term (a missing D skip or
# gate moves the logits by O(0.1) of their size).
ULPS = 40


def tol(reference) -> float:
    return ULPS * float(np.finfo(np.float32).eps) * float(np.abs(reference).max())


def _compare(model, tmp_path):
    torch.manual_seed(0)
    model.eval()
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        theirs = model(torch.tensor([TOKENS])).logits[0].numpy()
    ours, _ = load_lm(tmp_path)
    np.testing.assert_allclose(np.asarray(ours(np.asarray(TOKENS))), theirs, atol=tol(theirs), rtol=0)


def test_mamba1_logits_match_transformers(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.MambaConfig(vocab_size=17, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                                   conv_kernel=4, use_mambapy=False)
    _compare(transformers.MambaForCausalLM(cfg), tmp_path)


def test_falcon_mamba_logits_match_transformers(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.FalconMambaConfig(vocab_size=17, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                                         conv_kernel=4, use_mambapy=False)
    _compare(transformers.FalconMambaForCausalLM(cfg), tmp_path)


def test_mamba2_logits_match_transformers(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(vocab_size=17, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                                    conv_kernel=4, n_groups=1, head_dim=8, num_heads=4, chunk_size=4)
    _compare(transformers.Mamba2ForCausalLM(cfg), tmp_path)


def _hf_knockout_mixer(mixer, hidden, sources, targets):
    """A Mamba-1 knockout on the Hugging Face side, in PyTorch with the HF mixer's own modules: the
    discretisation of MambaMixer.slow_forward, a second scan with the sources' inputs zeroed, the
    targets read from it; D skip, gate and out_proj as theirs."""
    L = hidden.shape[1]
    x, gate = mixer.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)
    x = mixer.act(mixer.conv1d(x)[..., :L])
    ts, B, C = torch.split(mixer.x_proj(x.transpose(1, 2)),
                           [mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size], dim=-1)
    dt = torch.nn.functional.softplus(mixer.dt_proj(ts)).transpose(1, 2)  # (1, d, L)
    A = -torch.exp(mixer.A_log.float())
    dA = torch.exp(A[None, :, None, :] * dt[:, :, :, None])
    dBu = dt[:, :, :, None] * B[:, None, :, :] * x[:, :, :, None]

    def scan(bu):
        h, ys = torch.zeros_like(bu[:, :, 0]), []
        for i in range(L):
            h = dA[:, :, i] * h + bu[:, :, i]
            ys.append(torch.matmul(h, C[:, i, :, None])[..., 0])
        return torch.stack(ys, dim=-1)

    y = scan(dBu)
    knocked = dBu.clone()
    knocked[:, :, sources] = 0.0
    y[:, :, targets] = scan(knocked)[:, :, targets]
    y = (y + x * mixer.D[None, :, None]) * mixer.act(gate)
    return mixer.out_proj(y.transpose(1, 2))


def test_mamba1_knockout_matches_a_knockout_on_the_hf_side(tmp_path):
    import jax.numpy as jnp

    from implicitbias.interp.knockout import knockout_logits

    torch.manual_seed(1)
    cfg = transformers.MambaConfig(vocab_size=17, hidden_size=16, state_size=4, num_hidden_layers=3, expand=2,
                                   conv_kernel=4, use_mambapy=False)
    model = transformers.MambaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF's init leaves the mixers' share of the residual stream tiny; make it count
        for layer in model.backbone.layers:
            layer.mixer.out_proj.weight.mul_(30.0)
            layer.mixer.in_proj.weight.mul_(3.0)
    model.save_pretrained(tmp_path)
    sources, targets, window = [0, 1, 2, 3, 4, 7], [10, 14], [1, 2]
    for i in window:
        mixer = model.backbone.layers[i].mixer
        mixer.forward = lambda h, *a, _m=mixer, **k: _hf_knockout_mixer(_m, h, sources, targets)
    with torch.no_grad():
        theirs = model(torch.tensor([TOKENS])).logits[0].numpy()
    ours, _ = load_lm(tmp_path)
    L = len(TOKENS)
    got = knockout_logits(ours, jnp.asarray(TOKENS), jnp.isin(jnp.arange(3), jnp.asarray(window)),
                          jnp.isin(jnp.arange(L), jnp.asarray(sources)), jnp.isin(jnp.arange(L), jnp.asarray(targets)))
    np.testing.assert_allclose(np.asarray(got), theirs, atol=tol(theirs), rtol=0)
    plain = np.asarray(ours(jnp.asarray(TOKENS)))
    assert np.abs(plain[14] - theirs[14]).max() > 100 * tol(theirs)  # the knockout moved the logits it compares
    assert np.array_equal(plain[:10], np.asarray(got)[:10])  # and nothing before the first target


def _hf_knockout_mixer2(mixer, hidden, sources, targets, exempt):
    """A Mamba-2 knockout on the Hugging Face side, with the HF mixer's own modules and parameters
    (the chunk path of Mamba2Mixer.forward, n_groups = 1): in_proj, the causal conv1d and its SiLU,
    dt = softplus(dt + dt_bias) clamped to time_step_limit, A = -exp(A_log), the D skip, the gated
    RMSNorm (mixer.norm) and out_proj. The SSD scan is not theirs (their mamba2_chunk_scan is chunked
    and float32) but a naive float64 materialisation of the implicit attention,
    M[t, s, h] = (C_t . B_s) exp(sum_{k = s+1..t} A_h dt_{k,h}) for s <= t, y_t = sum_s M[t, s, h] dt_s x_s;
    the knockout sets M[t, s, h] = 0 for t in ``targets``, s in ``sources``, h not in ``exempt``
    (the same as a second pass with dt_s x_s zeroed on those heads, read at the targets)."""
    L, H, P, N = hidden.shape[1], mixer.num_heads, mixer.head_dim, mixer.ssm_state_size
    gate, xBC, dt = mixer.in_proj(hidden)[0].split([mixer.intermediate_size, mixer.conv_dim, H], dim=-1)
    xBC = mixer.act(mixer.conv1d(xBC.T[None])[0, :, :L]).T
    x, B, C = xBC.split([mixer.intermediate_size, N, N], dim=-1)
    dt = torch.nn.functional.softplus(dt + mixer.dt_bias).clamp(*mixer.time_step_limit).double()  # (L, H)
    a = -torch.exp(mixer.A_log.double()) * dt
    cum = torch.cumsum(a, dim=0)
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    decay = torch.exp((cum[:, None, :] - cum[None, :, :]).masked_fill(~causal[..., None], -torch.inf))
    M = (C.double() @ B.double().T)[..., None] * decay  # (t, s, h)
    drop = torch.zeros(L, L, H, dtype=torch.bool)
    drop[torch.tensor(targets, dtype=torch.long)[:, None], torch.tensor(sources, dtype=torch.long)[None, :]] = True
    M = M.masked_fill(drop & ~torch.as_tensor(exempt)[None, None, :], 0.0)
    xh = x.reshape(L, H, P).double()
    y = torch.einsum("tsh,shp->thp", M, dt[..., None] * xh) + mixer.D.double()[:, None] * xh
    y = mixer.norm(y.float().reshape(1, L, H * P), gate[None])
    return mixer.out_proj(y)


def _hf_slow_heads(mixer) -> np.ndarray:
    """The heads exempt in the "slow" decay group, on the HF side: the H // 3 largest exp(-exp(A_log))."""
    rate = torch.exp(-torch.exp(mixer.A_log.detach().double()))
    exempt = np.zeros(mixer.num_heads, bool)
    exempt[torch.argsort(rate, descending=True)[: mixer.num_heads // 3].numpy()] = True
    return exempt


def test_mamba2_knockout_matches_a_knockout_on_the_hf_side(tmp_path):
    import jax.numpy as jnp

    from implicitbias.interp.knockout import exempt_masks, knockout_logits

    torch.manual_seed(2)
    H = 6
    cfg = transformers.Mamba2Config(vocab_size=17, hidden_size=24, state_size=4, num_hidden_layers=3, expand=2,
                                    conv_kernel=4, n_groups=1, head_dim=8, num_heads=H, chunk_size=4)
    model = transformers.Mamba2ForCausalLM(cfg).eval()
    with torch.no_grad():  # HF's init: tiny mixer outputs, dt in [1e-3, 0.1], A_log = log(1..H) in order
        for layer in model.backbone.layers:
            m = layer.mixer
            m.out_proj.weight.mul_(30.0)
            m.in_proj.weight.mul_(3.0)
            m.dt_bias.copy_(torch.empty(H).uniform_(-1.5, 1.0))  # dt about 0.2 .. 1.3: decays that matter
            m.A_log.copy_(m.A_log[torch.randperm(H)] + 0.3 * torch.randn(H))  # the slow heads not simply the first
            m.D.copy_(torch.empty(H).uniform_(0.5, 1.5))
            m.norm.weight.copy_(torch.empty(m.intermediate_size).uniform_(0.5, 1.5))
    model.save_pretrained(tmp_path)
    tokens = torch.tensor([TOKENS])  # L = 15, not a multiple of chunk_size 4
    L, n_layers = len(TOKENS), 3
    window = [1, 2]

    def hf_logits(sources, targets, exempt):
        mixers = [model.backbone.layers[i].mixer for i in window]
        for i, m in zip(window, mixers):
            m.forward = lambda h, *a, _m=m, _e=exempt[i], **k: _hf_knockout_mixer2(_m, h, sources, targets, _e)
        try:
            with torch.no_grad():
                return model(tokens, use_cache=False).logits[0].numpy()
        finally:
            for m in mixers:
                del m.forward

    with torch.no_grad():
        plain_hf = model(tokens, use_cache=False).logits[0].numpy()
    none = np.zeros((n_layers, H), bool)
    slow = np.stack([_hf_slow_heads(layer.mixer) for layer in model.backbone.layers])
    # the reference is right: with no sources it is their forward (their chunked float32 SSD)
    empty = hf_logits([], [L - 1], none)
    np.testing.assert_allclose(empty, plain_hf, atol=tol(plain_hf), rtol=0)

    ours, _ = load_lm(tmp_path)
    assert np.array_equal(np.asarray(exempt_masks(ours, "slow")), slow)  # the same heads, found apart
    plain = np.asarray(ours(jnp.asarray(TOKENS)))
    sources, targets = [0, 1, 2, 3, 5, 8], [10, L - 1]
    as_mask = lambda idx, n=L: jnp.isin(jnp.arange(n), jnp.asarray(idx))
    knocked = {}
    for name, exempt, ex_ours in (("none", none, None), ("slow", slow, exempt_masks(ours, "slow"))):
        theirs = knocked[name] = hf_logits(sources, targets, exempt)
        got = np.asarray(knockout_logits(ours, jnp.asarray(TOKENS), as_mask(window, n_layers), as_mask(sources),
                                         as_mask(targets), ex_ours))
        t, effect = tol(theirs), np.abs(plain[targets] - theirs[targets]).max()
        np.testing.assert_allclose(got, theirs, atol=t, rtol=0)  # measured 1.0e-6 / 1.2e-6: 6-7 ulps of 1.6
        assert effect > 100 * t  # the knockout moved the logits it compares (measured 0.070 / 0.0092)
        assert np.array_equal(plain[:10], got[:10])  # and nothing before the first target
    # and the exempt heads matter: keeping their terms moves the targets far more than the tolerance
    gap = np.abs(knocked["none"][targets] - knocked["slow"][targets]).max()
    assert gap > 100 * tol(knocked["slow"])
