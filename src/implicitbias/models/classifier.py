"""Sequence classifiers built from S4D, LRU or Mamba2 blocks (SPEC §4, the paper's Table 2).

``SequenceClassifier`` maps one sequence ``x (L, d_input)`` to logits ``(n_classes,)``::

    h = encoder(x)                                   # position-wise linear, (L, d_model)
    repeat n_layers:  h = h + block(norm(h))         # pre-norm residual (norm optional), no dropout
    h = final_norm(h)                                # if norm is on
    logits = head(mean_t h_t)   or   head(h_{L-1})   # readout "mean" (pooling) or "last" (last step)

With ``readout="last"`` the prediction is read at the final time step only, as the theory's
standalone SSM reads ``y_L``; with ``"mean"`` every step contributes equally. Batch with
``jax.vmap(model)``. Parameters are float32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import equinox as eqx
import jax
import jax.numpy as jnp

from .lru import LRUBlock
from .mamba2 import Mamba2Block
from .s4d import S4DBlock

F32 = jnp.float32
KINDS = ("s4d", "lru", "mamba2")
READOUTS = ("mean", "last")


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of a ``SequenceClassifier``. Small defaults train on a 2-core CPU in seconds.

    ``d_state``: complex modes per channel for S4D (conjugates implicit) and in total for LRU; real
    state size per head for Mamba2. ``dt_min``/``dt_max``: range of the initial step size (S4D and
    Mamba2). ``r_min``/``r_max``/``max_phase``: LRU ring initialisation. ``expand``, ``headdim``,
    ``d_conv``, ``chunk_size``: Mamba2.
    """

    kind: str = "s4d"
    d_input: int = 1
    n_classes: int = 10
    d_model: int = 32
    d_state: int = 16
    n_layers: int = 2
    readout: str = "mean"
    norm: bool = True
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    r_min: float = 0.4
    r_max: float = 0.99
    max_phase: float = 2 * math.pi
    expand: int = 2
    headdim: int = 16
    d_conv: int = 4
    chunk_size: int = 16

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        for name in (
            "d_input",
            "n_classes",
            "d_model",
            "d_state",
            "n_layers",
            "expand",
            "headdim",
            "d_conv",
            "chunk_size",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if not 0 <= self.r_min < self.r_max < 1:
            raise ValueError(f"need 0 <= r_min < r_max < 1, got r_min={self.r_min}, r_max={self.r_max}")
        if not self.max_phase > 0:
            raise ValueError(f"max_phase must be > 0, got {self.max_phase}")
        if self.kind == "mamba2" and (self.expand * self.d_model) % self.headdim:
            raise ValueError(
                f"expand * d_model = {self.expand * self.d_model} must be a multiple of headdim = {self.headdim}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def make_block(config: ClassifierConfig, key: jax.Array) -> eqx.Module:
    """One residual-branch block of the configured kind: ``(L, d_model) -> (L, d_model)``."""
    c = config
    if c.kind == "s4d":
        return S4DBlock(c.d_model, c.d_state, dt_min=c.dt_min, dt_max=c.dt_max, key=key)
    if c.kind == "lru":
        return LRUBlock(c.d_model, c.d_state, r_min=c.r_min, r_max=c.r_max, max_phase=c.max_phase, key=key)
    return Mamba2Block(
        c.d_model,
        c.d_state,
        expand=c.expand,
        headdim=c.headdim,
        d_conv=c.d_conv,
        chunk_size=c.chunk_size,
        dt_min=c.dt_min,
        dt_max=c.dt_max,
        key=key,
    )


class SequenceClassifier(eqx.Module):
    """Encoder, residual SSM blocks, optional norms, mean or last-step readout, linear head.

    ``__call__``: ``x (L, d_input) -> logits (n_classes,)``; ``features``: ``x -> (L, d_model)``.
    """

    encoder: eqx.nn.Linear
    norms: tuple
    blocks: tuple
    final_norm: eqx.nn.LayerNorm | None
    head: eqx.nn.Linear
    readout: str = eqx.field(static=True)

    def __init__(self, config: ClassifierConfig, key: jax.Array):
        c = config
        k_enc, k_head, *k_blocks = jax.random.split(key, 2 + c.n_layers)
        self.encoder = eqx.nn.Linear(c.d_input, c.d_model, key=k_enc, dtype=F32)
        self.blocks = tuple(make_block(c, k) for k in k_blocks)
        self.norms = tuple(eqx.nn.LayerNorm(c.d_model, dtype=F32) if c.norm else None for _ in range(c.n_layers))
        self.final_norm = eqx.nn.LayerNorm(c.d_model, dtype=F32) if c.norm else None
        self.head = eqx.nn.Linear(c.d_model, c.n_classes, key=k_head, dtype=F32)
        self.readout = c.readout

    def features(self, x: jax.Array) -> jax.Array:
        """Hidden sequence after the last block (and final norm): ``(L, d_input) -> (L, d_model)``."""
        h = jax.vmap(self.encoder)(x.astype(self.encoder.weight.dtype))
        for norm, block in zip(self.norms, self.blocks):
            z = jax.vmap(norm)(h) if norm is not None else h
            h = h + block(z)
        if self.final_norm is not None:
            h = jax.vmap(self.final_norm)(h)
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.features(x)
        pooled = jnp.mean(h, axis=0) if self.readout == "mean" else h[-1]
        return self.head(pooled)


def make_classifier(config: ClassifierConfig, key: jax.Array | int) -> SequenceClassifier:
    """Build a ``SequenceClassifier`` from ``config``; ``key`` is a PRNG key or an integer seed."""
    if isinstance(key, int):
        key = jax.random.PRNGKey(key)
    return SequenceClassifier(config, key)
