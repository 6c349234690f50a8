"""Mamba language-model checkpoints in a local directory: load and save (docs/science.md §6).

Nothing is downloaded: a user points at a directory that holds a checkpoint.

* **Hugging Face layout** (``save_pretrained``): ``config.json`` with ``model_type`` ``mamba``,
  ``falcon_mamba`` or ``mamba2``, and ``model.safetensors`` or a sharded
  ``model.safetensors.index.json``. Keys ``backbone.embeddings.weight``,
  ``backbone.layers.{i}.norm.weight``, ``backbone.layers.{i}.mixer.*``, ``backbone.norm_f.weight``;
  the head tied to the embedding, or ``lm_head.weight``.
* **mamba_ssm layout** (``state-spaces/mamba2-*``): ``config.json`` with ``d_model``, ``n_layer``,
  ``ssm_cfg`` and ``backbone.embedding.weight``; weights in ``model.safetensors`` or
  ``pytorch_model.bin`` (that one needs PyTorch to read).

Mamba-2 checkpoints must have one B/C group (``n_groups = 1``, the geometry of mamba2-130m); Hugging
Face's ``Mamba2Config`` defaults to 8. Every problem is a :class:`CheckpointError` with one line that
names the file or field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .lm import MambaLM, make_lm

KINDS = {"mamba": "mamba1", "falcon_mamba": "mamba1", "mamba2": "mamba2"}


class CheckpointError(ValueError):
    """A directory that is not a checkpoint this loader reads; the message names what is wrong."""


def _read_config(directory: Path) -> dict:
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json (not a checkpoint directory)")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: a JSON {type(cfg).__name__}, not an object of model settings")
    return cfg


def _read_tensors(directory: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    try:
        if single.is_file():
            return dict(load_file(single))
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: dict[str, np.ndarray] = {}
            for f in files:
                out.update(load_file(directory / f))
            return out
    except Exception as e:  # safetensors' own errors are not ValueErrors
        raise CheckpointError(f"{directory}: unreadable weights ({type(e).__name__}: {e})") from None
    bin_file = directory / "pytorch_model.bin"
    if bin_file.is_file():
        try:
            import torch
        except ImportError:
            raise CheckpointError(f"{bin_file}: a PyTorch pickle; reading it needs torch "
                                  "(pip install 'implicitbias[hf]'), or convert it to model.safetensors") from None
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise CheckpointError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _geometry(cfg: dict) -> dict:
    """The model's shapes and options from a config of either layout (``kind`` and the block's)."""
    if "model_type" in cfg:
        mt = cfg["model_type"]
        if mt not in KINDS:
            raise CheckpointError(f"model_type {mt!r} is not one of {sorted(KINDS)}")
        g = dict(kind=KINDS[mt], vocab=cfg["vocab_size"], d_model=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"],
                 d_state=cfg["state_size"], expand=cfg.get("expand", 2), d_conv=cfg.get("conv_kernel", 4),
                 eps=cfg.get("layer_norm_epsilon", 1e-5), tied=cfg.get("tie_word_embeddings", True),
                 prefix="embeddings")
        if g["kind"] == "mamba1":
            rank = cfg.get("time_step_rank", "auto")
            g.update(dt_rank=math.ceil(g["d_model"] / 16) if rank == "auto" else int(rank),
                     use_bias=cfg.get("use_bias", False), conv_bias=cfg.get("use_conv_bias", True),
                     rms_bcdt=mt == "falcon_mamba", rms_eps=cfg.get("mixer_rms_eps", 1e-6))
        else:
            if cfg.get("n_groups", 1) != 1:
                raise CheckpointError(f"n_groups = {cfg['n_groups']}: only one B/C group (n_groups = 1) is supported")
            g.update(headdim=cfg.get("head_dim", 64), chunk_size=cfg.get("chunk_size", 256))
        return g
    if {"d_model", "n_layer", "vocab_size"} <= cfg.keys():  # mamba_ssm's MambaConfig
        ssm = cfg.get("ssm_cfg") or {}
        kind = "mamba2" if ssm.get("layer") == "Mamba2" else "mamba1"
        if ssm.get("ngroups", 1) != 1:
            raise CheckpointError(f"ngroups = {ssm['ngroups']}: only one B/C group is supported")
        vocab = cfg["vocab_size"]
        mult = cfg.get("pad_vocab_size_multiple", 1)
        vocab += (-vocab) % mult
        g = dict(kind=kind, vocab=vocab, d_model=cfg["d_model"], n_layers=cfg["n_layer"],
                 d_state=ssm.get("d_state", 128 if kind == "mamba2" else 16), expand=ssm.get("expand", 2),
                 d_conv=ssm.get("d_conv", 4), eps=cfg.get("norm_epsilon", 1e-5), tied=cfg.get("tie_embeddings", True),
                 prefix="embedding")
        if kind == "mamba2":
            g.update(headdim=ssm.get("headdim", 64), chunk_size=ssm.get("chunk_size", 256))
        else:
            g.update(dt_rank=math.ceil(g["d_model"] / 16), use_bias=False, conv_bias=True, rms_bcdt=False, rms_eps=1e-6)
        return g
    raise CheckpointError("config.json has neither model_type (Hugging Face) nor d_model/n_layer (mamba_ssm)")


def _skeleton(g: dict) -> MambaLM:
    kw = ({"expand": g["expand"], "d_conv": g["d_conv"], "dt_rank": g["dt_rank"], "use_bias": g["use_bias"],
           "conv_bias": g["conv_bias"], "rms_bcdt": g["rms_bcdt"], "rms_eps": g["rms_eps"]}
          if g["kind"] == "mamba1" else
          {"expand": g["expand"], "d_conv": g["d_conv"], "headdim": g["headdim"], "chunk_size": g["chunk_size"],
           "norm_eps": g["eps"]})
    lm = make_lm(g["kind"], g["vocab"], g["d_model"], g["n_layers"], d_state=g["d_state"], key=jax.random.PRNGKey(0),
                 **kw)
    return MambaLM(lm.embedding, lm.norms, lm.mixers, lm.norm_f, g["eps"])


def _mixer_keys(kind: str) -> dict[str, str]:
    """Our mixer field -> the checkpoint's key under ``mixer.``."""
    common = {"in_proj.weight": "in_proj.weight", "conv_weight": "conv1d.weight", "conv_bias": "conv1d.bias",
              "A_log": "A_log", "D": "D", "out_proj.weight": "out_proj.weight"}
    if kind == "mamba1":
        return {**common, "x_proj.weight": "x_proj.weight", "dt_proj.weight": "dt_proj.weight",
                "dt_proj.bias": "dt_proj.bias", "in_proj.bias": "in_proj.bias", "out_proj.bias": "out_proj.bias"}
    return {**common, "dt_bias": "dt_bias", "norm_weight": "norm.weight"}


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def load_lm(directory: str | Path) -> tuple[MambaLM, dict]:
    """The float32 :class:`~implicitbias.models.lm.MambaLM` in ``directory`` and its ``config.json``.
    :class:`CheckpointError` (one line) for a missing directory, a file that is not a checkpoint, an
    unknown ``model_type``, several B/C groups, a missing tensor or a wrong shape."""
    directory = Path(directory)
    cfg = _read_config(directory)
    g = _geometry(cfg)
    tensors = _read_tensors(directory)

    def take(key: str, shape) -> jax.Array:
        if key not in tensors:
            raise CheckpointError(f"{directory}: tensor {key!r} missing")
        a = np.asarray(tensors[key], np.float32)
        if key.endswith("conv1d.weight"):  # (ch, 1, K) -> (K, ch)
            a = a.reshape(a.shape[0], -1).T
        if tuple(a.shape) != tuple(shape):
            raise CheckpointError(f"{directory}: tensor {key!r} has shape {a.shape}, the config says {tuple(shape)}")
        return jnp.asarray(a)

    lm = _skeleton(g)
    emb = take(f"backbone.{g['prefix']}.weight", lm.embedding.shape)
    head = None
    if "lm_head.weight" in tensors and not np.array_equal(np.asarray(tensors["lm_head.weight"], np.float32),
                                                          np.asarray(emb)):
        head = take("lm_head.weight", lm.embedding.shape)  # untied (HF Mamba2Config's default)
    mixers = []
    for i, mixer in enumerate(lm.mixers):
        pre = f"backbone.layers.{i}.mixer."
        fields = [(ours, theirs) for ours, theirs in _mixer_keys(g["kind"]).items()
                  if not (ours.endswith(".bias") and _get(mixer, ours) is None)]
        if g["kind"] == "mamba1" and not g["conv_bias"]:
            fields = [f for f in fields if f[0] != "conv_bias"]
        values = [take(pre + theirs, _get(mixer, ours).shape) for ours, theirs in fields]
        mixers.append(eqx.tree_at(lambda m, fs=tuple(f for f, _ in fields): [_get(m, f) for f in fs], mixer, values))
    norms = jnp.stack([take(f"backbone.layers.{i}.norm.weight", (g["d_model"],)) for i in range(g["n_layers"])])
    norm_f = take("backbone.norm_f.weight", (g["d_model"],))
    return MambaLM(emb, norms, mixers, norm_f, g["eps"], head), cfg


def save_lm(lm: MambaLM, directory: str | Path, *, falcon: bool = False) -> Path:
    """Write ``lm`` in the Hugging Face layout (``config.json`` + ``model.safetensors``), which
    :func:`load_lm` and ``transformers``' ``from_pretrained`` read. ``falcon``: Mamba-1 with weightless
    RMS on B, C and delta (``model_type = falcon_mamba``)."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    m0 = lm.mixers[0]
    d_model = lm.embedding.shape[1]
    cfg = {"vocab_size": int(lm.embedding.shape[0]), "hidden_size": int(d_model), "state_size": int(m0.d_state),
           "num_hidden_layers": lm.n_layers, "layer_norm_epsilon": lm.eps, "expand": m0.d_inner // d_model,
           "conv_kernel": int(m0.conv_weight.shape[0]), "tie_word_embeddings": lm.head is None, "use_bias": False}
    if lm.kind == "mamba1":
        cfg.update(model_type="falcon_mamba" if falcon else "mamba", time_step_rank=m0.dt_rank,
                   use_bias=m0.in_proj.bias is not None, use_conv_bias=True, intermediate_size=m0.d_inner)
        if falcon:
            cfg["mixer_rms_eps"] = m0.rms_eps
    else:
        cfg.update(model_type="mamba2", n_groups=1, head_dim=m0.headdim, num_heads=m0.n_heads,
                   chunk_size=m0.chunk_size, use_conv_bias=True)
    tensors = {"backbone.embeddings.weight": lm.embedding, "backbone.norm_f.weight": lm.norm_f}
    if lm.head is not None:
        tensors["lm_head.weight"] = lm.head
    for i, mixer in enumerate(lm.mixers):
        tensors[f"backbone.layers.{i}.norm.weight"] = lm.norms[i]
        for ours, theirs in _mixer_keys(lm.kind).items():
            value = _get(mixer, ours)
            if value is None:
                continue
            if ours == "conv_weight":  # (K, ch) -> (ch, 1, K)
                value = value.T[:, None, :]
            tensors[f"backbone.layers.{i}.mixer.{theirs}"] = value
    save_file({k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in tensors.items()},
              directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    return directory


__all__ = ["CheckpointError", "KINDS", "load_lm", "save_lm"]
