"""Double precision, switched on when a computation asks for it, not when the package is imported.

The papers' numbers are computed with JAX's 64-bit mode on (``jax_enable_x64``): the per-Theorem
flow runs to ``t ~ 1e13`` from entries of size ``1e-3``, the Keras initialiser draws ``uint64``
Philox words, and the float32 variants (``dtype="float32"``) were measured with the mode on too, so
their integer types match. JAX's switch is process-wide, so the package leaves it alone at import
(importing ``implicitbias`` beside other JAX code changes nothing) and every experiment's ``run``
switches it on (:func:`in_float64`), as the CLI, the runner and the Ray workers do through it. Code
that calls the library's functions directly calls :func:`enable_float64` first to get the same
numbers (docs/design.md, "Precision").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import jax

F = TypeVar("F", bound=Callable)


def enable_float64() -> None:
    """Switch on JAX's 64-bit mode (process-wide; idempotent). Call it before creating arrays: arrays
    made before keep their 32-bit types."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def float64_enabled() -> bool:
    """Whether JAX's 64-bit mode is on."""
    return bool(jax.config.jax_enable_x64)


def in_float64(run: F) -> F:
    """Decorate an experiment's ``run``: :func:`enable_float64`, then ``run``. The wrapper carries
    ``enables_float64 = True`` (a test checks every registered experiment)."""

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        enable_float64()
        return run(*args, **kwargs)

    wrapper.enables_float64 = True
    return wrapper
