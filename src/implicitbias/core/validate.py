"""Config validation at the boundary: one clear ``ValueError`` naming the field (docs/design.md, Errors)."""

from __future__ import annotations

import math


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``."""
    if not condition:
        raise ValueError(message)


def require_seeds(seeds) -> None:
    """``seeds``: a non-empty tuple of non-negative integers (``True`` is not a seed)."""
    require(len(seeds) > 0, "seeds must not be empty")
    require(all(type(s) is int and s >= 0 for s in seeds), f"seeds must be non-negative integers, got {seeds}")


def require_finite(name: str, value: float) -> None:
    """``value`` is a finite number (NaN and +-inf are refused)."""
    require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            f"{name} must be a finite number, got {value!r}")
