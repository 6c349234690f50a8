"""Images behind image-as-sequence data: image rows, the authors' differentiable augmentation, and
the last-row share of a perturbation (docs/science.md §4).

An :class:`ImageView` says how a sequence ``(L, Cs)`` holds an image ``(C, H, W)``:

* ``layout="row"``: step ``t`` is pixel ``(t // W, t % W)`` with its ``C = Cs`` channels (digits
  ``(1, 8, 8)``; CIFAR-10 ``scan="row"`` ``(3, 32, 32)``). A pure sequence is the image ``(Cs, L, 1)``:
  every step is an image *row* of width 1 (MNIST-1D ``(1, 40, 1)``), so the "last row" is the last step.
* ``layout="channel_major"``: the sequence is the stored image ``(C, H, W)`` read flat in ``Cs``-wide
  steps (CIFAR-10 ``scan="channel_major"``, the paper's S4/LRU order).

The authors' brewing and training augmentation (their ``forest/data/diff_data_augmentation.py``,
``RandomTransform(source_size=32, target_size=32, shift=8, fliplr=True, mode='bilinear')``) draws per
image ``r ~ U[0,1]^4``, shifts the sampling grid by ``(2 r - 1) * 8 / 31`` grid units (up to
``8 / 31 * 31 / 2 = 4`` pixels of 32, i.e. ``size / 8``) in x and y, mirrors x when ``r_2 > 0.5`` and
samples bilinearly with zeros outside (``grid_sample(align_corners=True)``). :func:`augment_sequences`
does the same on the image of each sequence, ``size / 8`` pixels per axis: on digits 1 pixel, on
MNIST-1D up to 5 steps of time shift and, the image having width 1, no horizontal shift and a
flip that is the identity (the sequence analogue: a time reversal would move the end of the
sequence to its start, so it is not used). Linear in ``x``, so gradients flow to a perturbation.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

LAYOUTS = ("row", "channel_major")


@dataclass(frozen=True)
class ImageView:
    """The image ``(channels, height, width)`` behind sequences of shape ``(height * width * channels
    / seq_channels, seq_channels)`` (module docstring)."""

    layout: str
    channels: int
    height: int
    width: int
    seq_channels: int = 0  # channel_major: values per step (0: = channels)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        for name in ("channels", "height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.layout == "channel_major" and (self.cs < 1 or self.size % self.cs):
            raise ValueError(f"seq_channels={self.seq_channels} must divide C*H*W={self.size}")

    @property
    def size(self) -> int:
        return self.channels * self.height * self.width

    @property
    def cs(self) -> int:
        return self.seq_channels or self.channels

    @property
    def seq_shape(self) -> tuple[int, int]:
        return (self.size // self.cs, self.cs)

    def to_image(self, x):
        """``(..., L, Cs) -> (..., C, H, W)`` (NumPy or JAX arrays)."""
        lead = x.shape[:-2]
        if self.layout == "channel_major":
            return x.reshape(lead + (self.channels, self.height, self.width))
        img = x.reshape(lead + (self.height, self.width, self.channels))
        return jnp.moveaxis(img, -1, -3) if isinstance(x, jax.Array) else np.moveaxis(img, -1, -3)

    def from_image(self, img):
        """``(..., C, H, W) -> (..., L, Cs)``, the inverse of :meth:`to_image`."""
        lead = img.shape[:-3]
        if self.layout == "channel_major":
            return img.reshape(lead + self.seq_shape)
        mv = jnp.moveaxis if isinstance(img, jax.Array) else np.moveaxis
        return mv(img, -3, -1).reshape(lead + self.seq_shape)

    def rows(self) -> np.ndarray:
        """``(L, Cs)`` integer array: the image row of each sequence entry."""
        img = np.broadcast_to(np.arange(self.height)[None, :, None], (self.channels, self.height, self.width))
        return np.ascontiguousarray(self.from_image(np.array(img)))

    def last_row_ratio(self, delta) -> float:
        """The authors' metric (their ``forest/data/kettle.py``, ``export_poison``, ``last_row_norm_ratio``):
        mean over poisons of ``||delta in the last image row|| / ||delta||`` (rows whose perturbation is
        zero count 0). ``delta``: ``(P, L, Cs)``."""
        d = np.asarray(delta, np.float64)
        last = self.rows() == self.height - 1
        num = np.sqrt((d**2 * last).reshape(d.shape[0], -1).sum(1))
        den = np.sqrt((d**2).reshape(d.shape[0], -1).sum(1))
        return float(np.mean(np.divide(num, den, out=np.zeros_like(num), where=den != 0)))

    def max_shift(self) -> tuple[float, float]:
        """Largest shift in pixels along ``(H, W)``: ``size / 8`` (the authors' 4 of 32), 0 for size 1."""
        return (self.height / 8 if self.height > 1 else 0.0, self.width / 8 if self.width > 1 else 0.0)


def _shift_axis(img: jax.Array, pos: jax.Array, axis: int) -> jax.Array:
    """Linear interpolation of ``img`` along ``axis`` at positions ``pos`` (zeros outside)."""
    n = img.shape[axis]
    i0 = jnp.floor(pos)
    w1 = (pos - i0).astype(img.dtype)
    i0 = i0.astype(jnp.int32)

    def gather(i):
        valid = (i >= 0) & (i <= n - 1)
        v = jnp.take(img, jnp.clip(i, 0, n - 1), axis=axis)
        shape = [1] * img.ndim
        shape[axis] = -1
        return v * valid.reshape(shape).astype(img.dtype)

    shape = [1] * img.ndim
    shape[axis] = -1
    return gather(i0) * (1 - w1).reshape(shape) + gather(i0 + 1) * w1.reshape(shape)


def augment_image(img: jax.Array, r: jax.Array, max_shift: tuple[float, float], flip: bool = True) -> jax.Array:
    """One image ``(C, H, W)`` shifted by ``(2 r_1 - 1) max_shift_H`` rows and ``(2 r_0 - 1) max_shift_W``
    columns and mirrored left-right when ``flip`` and ``r_2 > 0.5`` (the authors' ``RandomTransform``:
    output pixel ``j`` samples the input at ``j + s``, then mirrored ``W - 1 - (j + s)``)."""
    _, H, W = img.shape
    sy = (2 * r[1] - 1) * max_shift[0]
    sx = (2 * r[0] - 1) * max_shift[1]
    out = _shift_axis(img, jnp.arange(H, dtype=img.dtype) + sy, 1) if max_shift[0] else img
    if max_shift[1] or (flip and W > 1):
        pos = jnp.arange(W, dtype=img.dtype) + sx
        if flip and W > 1:
            pos = jnp.where(r[2] > 0.5, (W - 1) - pos, pos)
        out = _shift_axis(out, pos, 2)
    return out


def augment_sequences(x: jax.Array, key: jax.Array, view: ImageView, flip: bool = True) -> jax.Array:
    """The authors' random shift (and flip) of every sequence of ``x (N, L, Cs)`` through its image."""
    r = jax.random.uniform(key, (x.shape[0], 3), x.dtype)
    ms = view.max_shift()
    f = lambda xi, ri: view.from_image(augment_image(view.to_image(xi), ri, ms, flip))
    return jax.vmap(f)(x, r)
