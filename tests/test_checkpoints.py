"""Mamba checkpoints from a local directory (models/checkpoints.py): what save_lm writes, load_lm reads
back to the same logits (Hugging Face layout, sharded, mamba_ssm layout); every malformed directory
is one CheckpointError naming the problem. The comparison with transformers' own models is in
tests/test_checkpoints_hf.py (the hf extra)."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from implicitbias.models.checkpoints import CheckpointError, load_lm, save_lm
from implicitbias.models.lm import make_lm

TOKENS = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5], np.int32)


@eqx.filter_jit
def logits(lm):
    """``lm(TOKENS)``, compiled once per model structure (a saved and a loaded model share it)."""
    return lm(TOKENS)


def tiny(kind, **kw):
    extra = {"headdim": 4, "chunk_size": 4} if kind == "mamba2" else {}
    return make_lm(kind, 13, 8, 2, d_state=4, key=jax.random.PRNGKey(7), **extra, **kw)


@pytest.mark.parametrize("kind, kw", [("mamba1", {}), ("mamba1", {"rms_bcdt": True}), ("mamba2", {})])
def test_a_saved_checkpoint_loads_to_the_same_logits(tmp_path, kind, kw):
    lm = tiny(kind, **kw)
    save_lm(lm, tmp_path, falcon=bool(kw))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == {"mamba1": "falcon_mamba" if kw else "mamba", "mamba2": "mamba2"}[kind]
    loaded, _ = load_lm(tmp_path)
    np.testing.assert_array_equal(logits(loaded), logits(lm))  # the same float32 weights, the same program


def test_a_sharded_checkpoint_loads(tmp_path):
    lm = tiny("mamba2")
    save_lm(lm, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, ks in shards.items():
        save_file({k: tensors[k] for k in ks}, tmp_path / name)
    index = {"weight_map": {k: name for name, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    np.testing.assert_array_equal(logits(load_lm(tmp_path)[0]), logits(lm))


def test_the_mamba_ssm_layout_loads(tmp_path):
    lm = tiny("mamba2")
    save_lm(lm, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["backbone.embedding.weight"] = tensors.pop("backbone.embeddings.weight")
    tensors["lm_head.weight"] = tensors["backbone.embedding.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    m = lm.mixers[0]
    cfg = {"d_model": 8, "n_layer": 2, "vocab_size": 13, "pad_vocab_size_multiple": 1, "norm_epsilon": lm.eps,
           "ssm_cfg": {"layer": "Mamba2", "d_state": 4, "headdim": m.headdim, "chunk_size": m.chunk_size}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    np.testing.assert_array_equal(logits(load_lm(tmp_path)[0]), logits(lm))


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_malformed_directories_are_named_in_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_lm(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_lm(tmp_path)
    save_lm(tiny("mamba1"), tmp_path / "m")
    d = tmp_path / "m"
    _edit_config(d, model_type="gpt2")
    with pytest.raises(CheckpointError, match="model_type 'gpt2' is not one of"):
        load_lm(d)
    _edit_config(d, model_type="mamba", hidden_size=16)
    with pytest.raises(CheckpointError, match="has shape .* the config says"):
        load_lm(d)
    _edit_config(d, hidden_size=8)
    tensors = load_file(d / "model.safetensors")
    del tensors["backbone.layers.1.mixer.A_log"]
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(CheckpointError, match="tensor 'backbone.layers.1.mixer.A_log' missing"):
        load_lm(d)
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_lm(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_lm(d)
    save_lm(tiny("mamba2"), tmp_path / "g")
    _edit_config(tmp_path / "g", n_groups=8)
    with pytest.raises(CheckpointError, match="n_groups = 8"):
        load_lm(tmp_path / "g")
    (tmp_path / "g" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not JSON"):
        load_lm(tmp_path / "g")
