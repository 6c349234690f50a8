"""Config validation at the boundary: one clear ``ValueError`` naming the field (docs/design.md, Errors)."""

from __future__ import annotations

import dataclasses
import functools
import math
import typing

import numpy as np


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


def check_finite(name: str, x) -> None:
    """Raise ``ValueError`` naming ``name`` if the array ``x`` holds NaN or inf (validation at the boundary:
    training inputs, loaded data sets)."""
    arr = np.asarray(x)
    finite = np.isfinite(arr)
    if not np.all(finite):
        bad = int(np.size(arr) - np.count_nonzero(finite))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def described(default, help: str):
    """A config field with a default and a one-line description: ``dataclasses.field(default=default,
    metadata={"help": help})``. The description is what ``implicitbias run EXPERIMENT --help`` prints
    beside the field; metadata is not part of the config's hash."""
    return dataclasses.field(default=default, metadata={"help": help})


def field_help(config_class) -> dict[str, str]:
    """``{field: description}`` of a config dataclass (``""`` where a field has none)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_class)}


@functools.cache
def _choices(config_class) -> dict[str, tuple]:
    hints = typing.get_type_hints(config_class)
    return {f.name: typing.get_args(hints[f.name]) for f in dataclasses.fields(config_class)
            if typing.get_origin(hints.get(f.name)) is typing.Literal}


def require_choices(config) -> None:
    """Every ``Literal``-typed field of the dataclass instance ``config`` holds one of its values; the
    one check of every choice field (``ValueError``: ``mode must be one of ('a', 'b'), got 'c'``)."""
    for name, allowed in _choices(type(config)).items():
        value = getattr(config, name)
        # same type as well as equal: True is not the choice 1
        require(any(value == a and type(value) is type(a) for a in allowed),
                f"{name} must be one of {allowed}, got {value!r}")
