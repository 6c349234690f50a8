"""Our loader and models against transformers' own Mamba-1 / Mamba-2 (an independent implementation):
tiny random Hugging Face models written with save_pretrained load to the same logits. Needs the hf
extra (torch + transformers; make test-hf); skipped, saying so, without it."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the hf extra is not installed (make test-hf installs torch)")
transformers = pytest.importorskip("transformers", reason="the hf extra is not installed (make test-hf)")

from implicitbias.models.checkpoints import load_lm  # noqa: E402

TOKENS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]  # 15: not a multiple of the Mamba-2 chunk (4)
# float32 through two implementations with different summation orders. The logits here are at most
# ~2.3 in size, where one float32 ulp is 2.4e-7; the two differ by a few ulps (2.4e-7 Mamba-1/Falcon,
# 3.9e-7 Mamba-2 on this machine). 1e-5 is 40 ulps: room for other summation orders, not for a wrong term
# (a missing D skip or gate changes logits by O(0.1)).
ATOL = 1e-5


def _compare(model, tmp_path):
    torch.manual_seed(0)
    model.eval()
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        theirs = model(torch.tensor([TOKENS])).logits[0].numpy()
    ours, _ = load_lm(tmp_path)
    np.testing.assert_allclose(np.asarray(ours(np.asarray(TOKENS))), theirs, atol=ATOL, rtol=0)


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
