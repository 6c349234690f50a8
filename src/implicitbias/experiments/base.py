"""What every experiment shares: records, config hashing, overrides, validation helpers.

An experiment is a module exporting ``NAME``, ``Config`` (frozen dataclass), ``PRESETS``
(name -> Config) and ``run(config) -> Record``; optionally ``paper_value(config)`` for reports.
The CLI, store and report only ever use these names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Record:
    """The result of one run: JSON-able ``metrics`` and named NumPy ``arrays``."""

    metrics: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def config_to_dict(config) -> dict[str, Any]:
    """Plain JSON-able dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_hash(experiment: str, config, version: str) -> str:
    """Stable 12-hex-digit hash of the experiment name, the config and the library version."""
    payload = json.dumps({"experiment": experiment, "config": config_to_dict(config), "version": version},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _coerce(name: str, raw: str, typ, flag: str = "--set") -> Any:
    """Parse the text of a ``--set`` value into the field's type."""
    origin = typing.get_origin(typ)
    if typ is bool:
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"{flag} {name}={raw}: expected true or false")
    if typ is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{flag} {name}={raw}: expected an integer") from None
    if typ is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{flag} {name}={raw}: expected a number") from None
    if typ is str or (origin is typing.Literal):
        return raw
    if origin is tuple:
        text = raw.strip()
        try:
            value = json.loads(text if text.startswith("[") else f"[{text}]")
        except json.JSONDecodeError:
            raise ValueError(f"{flag} {name}={raw}: expected a list such as 1,2,3 or [[0,1],[1,0]]") from None
        return _to_tuple(value)
    raise ValueError(f"{flag} {name}: fields of type {typ} cannot be set from the command line")


def _to_tuple(value):
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value


def parse_overrides(config_cls, items: list[str], flag: str = "--set") -> dict[str, Any]:
    """Turn ``["key=value", ...]`` into typed field values of ``config_cls``; clear errors otherwise."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"malformed --set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in hints or key not in names:
            raise ValueError(f"unknown field {key!r} in {flag}; fields are: {', '.join(names)}")
        out[key] = _coerce(key, raw, hints[key], flag)
    return out


def parse_sweeps(config_cls, items: list[str]) -> list[dict[str, Any]]:
    """The grid of ``--sweep key=v1,v2,...`` items (repeatable; the product over keys, first key
    slowest) as a list of override dicts, each value typed as by :func:`parse_overrides`.

    Values are split on commas; for a tuple field give a JSON list of values instead
    (``seeds=[[0,1],[2,3]]``). An empty list means no sweep (one empty dict)."""
    grid: list[dict[str, Any]] = [{}]
    seen: set[str] = set()
    for item in items:
        if "=" not in item:
            raise ValueError(f"malformed --sweep {item!r}: expected key=v1,v2,...")
        key, text = (t.strip() for t in item.split("=", 1))
        if key in seen:
            raise ValueError(f"--sweep {key} given twice")
        seen.add(key)
        if text.startswith("["):
            try:
                values = [json.dumps(v) for v in json.loads(text)]
            except json.JSONDecodeError:
                raise ValueError(f"--sweep {item!r}: expected a JSON list of values") from None
        else:
            values = [v.strip() for v in text.split(",")]
        if not values or any(v == "" for v in values):
            raise ValueError(f"--sweep {item!r}: expected at least one value and no empty ones")
        typed = [parse_overrides(config_cls, [f"{key}={v}"], "--sweep")[key] for v in values]
        grid = [{**g, key: v} for g in grid for v in typed]
    return grid


def sweep_label(point: dict[str, Any]) -> str:
    """``[k1=v1,k2=v2]`` for a sweep point (empty for no sweep): appended to the preset's name."""
    if not point:
        return ""
    return "[" + ",".join(f"{k}={json.dumps(v) if isinstance(v, tuple) else v}" for k, v in point.items()) + "]"


def base_preset(name: str) -> str:
    """The preset a stored run's name starts from (drops a :func:`sweep_label`):
    ``s4d/digits/last[eps=8.0]`` -> ``s4d/digits/last``."""
    return name.split("[", 1)[0]


def apply_overrides(config, overrides: dict[str, Any]):
    """A copy of ``config`` with ``overrides`` (validated again by ``__post_init__``)."""
    return dataclasses.replace(config, **overrides)


def require(condition: bool, message: str) -> None:
    """Config validation: raise ``ValueError(message)`` unless ``condition``."""
    if not condition:
        raise ValueError(message)


def mean_std(values) -> tuple[float, float]:
    """Mean and population std (``ddof=0``, as over the paper's 4 seeds) of finite-or-not values."""
    arr = np.asarray(values, dtype=float)
    return float(np.mean(arr)), float(np.std(arr))
