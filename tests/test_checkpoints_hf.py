"""Our loader and models against transformers' own Mamba-1 / Mamba-2 (an independent implementation):
tiny random Hugging Face models written with save_pretrained load to the same logits. Needs the hf
extra (torch + transformers; make test-hf); skipped, saying so, without it."""

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
