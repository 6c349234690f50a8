"""Sequence classifiers built from S4D, LRU or Mamba2 blocks (docs/science.md §4, the paper's Table 2).

``SequenceClassifier`` maps one sequence ``x (L, d_input)`` to logits ``(n_classes,)``::

    h = encoder(x)                                   # position-wise linear, (L, d_model)
    repeat n_layers:  h = h + drop(block(norm(h)))   # norm_position="pre" (norm optional)
    h = final_norm(h)                                # if norm is on
    logits = head(mean_t h_t)   or   head(h_{L-1})   # readout "mean" (pooling) or "last" (last step)

``norm_position="post"`` is the authors' layout (their ``forest/victims/s4model.py`` and
``lrumodel.py``, ``prenorm=False``): ``h = norm(h + drop(block(h)))``, no final norm; for Mamba2 their
``mamba2model.py``: ``h = drop(norm(h + block(h)))`` and a LayerNorm on the pooled features before the
head. ``dropout`` (their 0.1) is active only when a ``key`` is passed (training): on S4D a channel
mask shared by all steps (their ``nn.Dropout1d``), on LRU and Mamba2 an element-wise mask
(``nn.Dropout``). ``stem_stride > 0`` (their Mamba2, 4) replaces the encoder by a convolution stem on
the image behind the sequence (``stem_view``: layout, C, H, W, see
:class:`implicitbias.datasets.ImageView`): 3x3 convolution to ``d_model // 2`` channels, norm, GELU,
a ``stride x stride`` convolution with that stride to ``d_model``, norm, GELU, the patches read
row-major as the sequence (CIFAR-10: 64 patches; digits 8x8: 4; MNIST-1D 40x1: 10, the stride
capped by the image's size per axis). Their stem normalises with BatchNorm2d; ours with a LayerNorm
over channels per patch (no running statistics in a functional model).

With ``readout="last"`` the prediction is read at the final time step only, as the theory's
standalone SSM reads ``y_L``; with ``"mean"`` every step contributes equally. Batch with
``jax.vmap(model)`` (and ``jax.vmap(model)(x, keys)`` with dropout). Parameters are float32.
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
    dropout: float = 0.0
    norm_position: str = "pre"
    stem_stride: int = 0
    stem_view: tuple = ()  # (layout, C, H, W) of the image behind a sequence; needed by the stem

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
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {self.norm_position!r}")
        if not isinstance(self.stem_stride, int) or self.stem_stride < 0:
            raise ValueError(f"stem_stride must be an integer >= 0, got {self.stem_stride!r}")
        if self.stem_stride and len(self.stem_view) != 4:
            raise ValueError("stem_stride > 0 needs stem_view=(layout, C, H, W)")
        if self.stem_stride and self.d_model < 2:
            raise ValueError("stem_stride > 0 needs d_model >= 2")
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


class ConvStem(eqx.Module):
    """The authors' Mamba2 stem (their ``forest/victims/mamba2model.py``, ``Mamba2Model.stem``) on the
    image behind a sequence: ``(L, Cs) -> (L', d_model)`` patches read row-major (module docstring)."""

    conv1: jax.Array  # (d_model // 2, C, 3, 3), no bias
    norm1: eqx.nn.LayerNorm
    conv2: jax.Array  # (d_model, d_model // 2, sh, sw), no bias
    norm2: eqx.nn.LayerNorm
    view: tuple = eqx.field(static=True)
    stride: tuple = eqx.field(static=True)

    def __init__(self, d_input: int, d_model: int, stride: int, view: tuple, *, key: jax.Array):
        from ..datasets.views import ImageView

        layout, C, H, W = view
        ImageView(layout, int(C), int(H), int(W), d_input)  # validates the view against the input width
        k1, k2 = jax.random.split(key)
        mid = d_model // 2
        sh, sw = min(stride, H), min(stride, W)
        # PyTorch's default Conv2d initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        b1, b2 = 1 / math.sqrt(C * 9), 1 / math.sqrt(mid * sh * sw)
        self.conv1 = jax.random.uniform(k1, (mid, C, 3, 3), F32, -b1, b1)
        self.conv2 = jax.random.uniform(k2, (d_model, mid, sh, sw), F32, -b2, b2)
        self.norm1 = eqx.nn.LayerNorm(mid, dtype=F32)
        self.norm2 = eqx.nn.LayerNorm(d_model, dtype=F32)
        self.view = (layout, int(C), int(H), int(W), d_input)
        self.stride = (sh, sw)

    def __call__(self, x: jax.Array) -> jax.Array:
        from ..datasets.views import ImageView

        v = ImageView(*self.view)
        img = v.to_image(x.astype(F32))[None]  # (1, C, H, W)
        dn = ("NCHW", "OIHW", "NCHW")
        h = jax.lax.conv_general_dilated(img, self.conv1, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)[0]
        h = jax.nn.gelu(jax.vmap(jax.vmap(self.norm1, in_axes=1, out_axes=1), in_axes=2, out_axes=2)(h))
        h = jax.lax.conv_general_dilated(h[None], self.conv2, self.stride, "VALID", dimension_numbers=dn)[0]
        h = jax.nn.gelu(jax.vmap(jax.vmap(self.norm2, in_axes=1, out_axes=1), in_axes=2, out_axes=2)(h))
        return h.reshape(h.shape[0], -1).T  # (H' W', d_model), patches row-major


class SequenceClassifier(eqx.Module):
    """Encoder, residual SSM blocks, optional norms, mean or last-step readout, linear head.

    ``__call__``: ``x (L, d_input) -> logits (n_classes,)``; ``features``: ``x -> (L, d_model)``.
    """

    encoder: eqx.nn.Linear | ConvStem
    norms: tuple
    blocks: tuple
    final_norm: eqx.nn.LayerNorm | None
    head: eqx.nn.Linear
    readout: str = eqx.field(static=True)
    head_norm: eqx.nn.LayerNorm | None = None
    dropout: float = eqx.field(static=True, default=0.0)
    norm_position: str = eqx.field(static=True, default="pre")
    tied_dropout: bool = eqx.field(static=True, default=False)
    kind: str = eqx.field(static=True, default="s4d")

    def __init__(self, config: ClassifierConfig, key: jax.Array):
        c = config
        k_enc, k_head, *k_blocks = jax.random.split(key, 2 + c.n_layers)
        if c.stem_stride:
            self.encoder = ConvStem(c.d_input, c.d_model, c.stem_stride, c.stem_view, key=k_enc)
        else:
            self.encoder = eqx.nn.Linear(c.d_input, c.d_model, key=k_enc, dtype=F32)
        self.blocks = tuple(make_block(c, k) for k in k_blocks)
        self.norms = tuple(eqx.nn.LayerNorm(c.d_model, dtype=F32) if c.norm else None for _ in range(c.n_layers))
        post = c.norm_position == "post"
        self.final_norm = eqx.nn.LayerNorm(c.d_model, dtype=F32) if c.norm and not post else None
        self.head_norm = eqx.nn.LayerNorm(c.d_model, dtype=F32) if c.norm and post and c.kind == "mamba2" else None
        self.head = eqx.nn.Linear(c.d_model, c.n_classes, key=k_head, dtype=F32)
        self.readout = c.readout
        self.dropout = float(c.dropout)
        self.norm_position = c.norm_position
        self.tied_dropout = c.kind == "s4d"
        self.kind = c.kind

    def _drop(self, h: jax.Array, key: jax.Array | None) -> jax.Array:
        if key is None or not self.dropout:
            return h
        shape = (1, h.shape[1]) if self.tied_dropout else h.shape
        keep = jax.random.bernoulli(key, 1.0 - self.dropout, shape)
        return jnp.where(keep, h / (1.0 - self.dropout), 0.0).astype(h.dtype)

    def features(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Hidden sequence after the last block (and final norm): ``(L, d_input) -> (L', d_model)``
        (``L' = L`` except with the convolution stem). ``key``: dropout on (training)."""
        if isinstance(self.encoder, ConvStem):
            h = self.encoder(x)
        else:
            h = jax.vmap(self.encoder)(x.astype(self.encoder.weight.dtype))
        keys = [None] * len(self.blocks) if key is None else list(jax.random.split(key, len(self.blocks)))
        for norm, block, k in zip(self.norms, self.blocks, keys):
            ln = (lambda v, norm=norm: jax.vmap(norm)(v)) if norm is not None else (lambda v: v)
            if self.norm_position == "pre":
                h = h + self._drop(block(ln(h)), k)
            elif self.kind == "mamba2":
                h = self._drop(ln(h + block(h)), k)  # the authors' Mamba2 block
            else:
                h = ln(h + self._drop(block(h), k))
        if self.final_norm is not None:
            h = jax.vmap(self.final_norm)(h)
        return h

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        h = self.features(x, key)
        pooled = jnp.mean(h, axis=0) if self.readout == "mean" else h[-1]
        if self.head_norm is not None:
            pooled = self.head_norm(pooled)
        return self.head(pooled)


def make_classifier(config: ClassifierConfig, key: jax.Array | int) -> SequenceClassifier:
    """Build a ``SequenceClassifier`` from ``config``; ``key`` is a PRNG key or an integer seed."""
    if isinstance(key, int):
        key = jax.random.PRNGKey(key)
    return SequenceClassifier(config, key)
