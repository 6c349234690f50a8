"""Training inputs (docs/science.md §1-§2): baseline and special sequences, unit impulses, clean labels.

Inputs are arrays ``X: (N, L)``; position ``j`` (0-based) of a length-``L`` sequence meets
``h_{L-j}``, so mass at the *last* positions reads the *first* entries of the impulse response.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _checked_positions(positions: Sequence[int], length: int) -> np.ndarray:
    """``positions`` as an int array; ``ValueError`` if any lies outside ``0..length-1``."""
    pos = np.asarray(list(positions), dtype=int)
    if pos.size and (pos.min() < 0 or pos.max() >= length):
        raise ValueError(f"positions {pos.tolist()} out of range for length {length}")
    return pos


def gaussian_sequences(
    key: jax.Array, n: int, length: int, positions: Sequence[int], sd: float = 1.0, dtype=jnp.float64
) -> jax.Array:
    """``n`` sequences of length ``length``, ``N(0, sd^2)`` at ``positions`` and zero elsewhere.

    Shape ``(n, length)``.
    """
    positions = _checked_positions(positions, length)
    mask = jnp.zeros((length,), dtype).at[positions].set(1.0)
    return sd * jax.random.normal(key, (n, length), dtype) * mask


def baseline_sequences(key: jax.Array, n: int, length: int, stop: int, sd: float = 1.0) -> jax.Array:
    """Baseline sequences of docs/science.md §2b: ``N(0,1)`` entries at positions ``0:stop``. Shape ``(n, length)``."""
    return gaussian_sequences(key, n, length, range(stop), sd)


def special_sequences(
    key: jax.Array, n: int, length: int, positions: Sequence[int] | None = None, sd: float = 1.0
) -> jax.Array:
    """Special sequences (docs/science.md §1): mass only at the last positions; default position ``L-2``.

    Shape ``(n, length)``. Position ``L-2`` reads ``h_2``.
    """
    positions = [length - 2] if positions is None else list(positions)
    return gaussian_sequences(key, n, length, positions, sd)


def numpy_gaussian_rows(
    seed: int, blocks: Sequence[tuple[int, Sequence[int]]], length: int, sd: float = 1.0
) -> tuple[jax.Array, ...]:
    """Gaussian rows from one NumPy legacy stream ``RandomState(seed)``, block after block.

    ``blocks``: ``(n, positions)`` pairs; block ``b`` is ``(n_b, length)``, ``N(0, sd^2)`` at its
    positions (in increasing order) and zero elsewhere. The draws are taken row by row, so the rows
    are the authors' ``generate_inputs`` data (docs/science.md §2b): the baseline block is the same whether or
    not a special block follows it.
    """
    rs = np.random.RandomState(seed)
    out = []
    for n, positions in blocks:
        pos = np.sort(_checked_positions(positions, length))
        X = np.zeros((n, length))
        X[:, pos] = rs.normal(0.0, sd, (n, pos.size))
        out.append(jnp.asarray(X))
    return tuple(out)


def impulses(length: int, positions: Sequence[int], dtype=jnp.float64) -> jax.Array:
    """One unit impulse per entry of ``positions``. Shape ``(len(positions), length)`` (docs/science.md §2a)."""
    return jnp.eye(length, dtype=dtype)[jnp.asarray(list(positions), int)]


def clean_labels(teacher: Callable[[jax.Array], jax.Array], X: jax.Array) -> jax.Array:
    """Labels given by the teacher itself: the 'clean' in clean-label poisoning. ``(N, L) -> (N,)``."""
    return teacher(X)
