"""Configs from the command line: ``--set`` / ``--sweep`` parsing, preset selection, overrides.

Every error is one ``ValueError`` whose message names the flag and the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any


def as_tuples(value):
    """JSON lists (at any depth) back into the tuples a frozen config holds."""
    if isinstance(value, list):
        return tuple(as_tuples(v) for v in value)
    return value


class _Mismatch(Exception):
    """A parsed value does not have the field's type (reported by :func:`_coerce` for the whole field)."""


def _check(value, typ):
    """``value`` (parsed JSON) as an instance of ``typ``; :class:`_Mismatch` otherwise."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(typ)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0]) for v in value)
        if len(args) != len(value):
            raise _Mismatch
        return tuple(_check(v, t) for v, t in zip(value, args))
    if typ is bool and not isinstance(value, bool):
        raise _Mismatch
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _Mismatch
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Mismatch
        return float(value)
    if typ is str and not isinstance(value, str):
        raise _Mismatch
    return value


def _describe(typ) -> str:
    if typing.get_origin(typ) is tuple:
        args = typing.get_args(typ)
        inner = _describe(args[0]) if args else "values"
        return f"a list of {inner.removeprefix('an ').removeprefix('a ')}s such as 1,2,3 or [[0,1],[1,0]]"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(typ, str(typ))


def _typed(name: str, raw: str, value, typ, flag: str):
    try:
        return _check(value, typ)
    except _Mismatch:
        raise ValueError(f"{flag} {name}={raw}: expected {_describe(typ)}") from None


def _coerce(name: str, raw: str, typ, flag: str = "--set") -> Any:
    """Parse the text of a ``--set`` value into the field's type."""
    origin = typing.get_origin(typ)
    text = raw.strip()
    if typ is bool:
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"{flag} {name}={raw}: expected true or false")
    if typ is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{flag} {name}={raw}: expected an integer") from None
    if typ is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{flag} {name}={raw}: expected a finite number") from None
        return _typed(name, raw, value, typ, flag)
    if origin is typing.Literal:
        if text not in typing.get_args(typ):
            raise ValueError(f"{flag} {name}={raw}: expected one of {', '.join(map(str, typing.get_args(typ)))}")
        return text
    if typ is str:
        return raw
    if origin is tuple:
        try:
            value = json.loads(text if text.startswith("[") else f"[{text}]")
        except json.JSONDecodeError:
            raise ValueError(f"{flag} {name}={raw}: expected {_describe(typ)}") from None
        return _typed(name, raw, value, typ, flag)
    raise ValueError(f"{flag} {name}: fields of type {typ} cannot be set from the command line")


def parse_overrides(config_cls, items: list[str], flag: str = "--set") -> dict[str, Any]:
    """Turn ``["key=value", ...]`` into typed field values of ``config_cls``; clear errors otherwise."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"malformed {flag} {item!r}: expected key=value")
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


def overrides_against(config: dict[str, Any], base) -> dict[str, Any]:
    """The fields of a stored ``config`` (JSON dict) that differ from the preset config ``base``, in
    the order of ``base``'s fields (fields ``base`` lacks, e.g. from an older version, are ignored)."""
    return {f.name: config[f.name] for f in dataclasses.fields(base)
            if f.name in config and as_tuples(config[f.name]) != getattr(base, f.name)}


def select_presets(presets: dict[str, Any], patterns: list[str] | None, experiment: str = "",
                   exact: bool = False) -> dict[str, Any]:
    """Presets named exactly by a pattern, or lying under it (``per_theorem`` selects all of its cells).

    ``exact``: a pattern selects only the preset of that name, never the presets under it
    (``--exact --preset synthetic/beyond_L6`` runs that one preset, not its ``/fewer1``... variants)."""
    if not patterns:
        if exact:
            raise ValueError("--exact needs --preset NAME (the presets to run, each named in full)")
        return dict(presets)
    out = {}
    for pat in patterns:
        pat = pat.strip().rstrip("/")
        hits = {k: v for k, v in presets.items() if k == pat or (not exact and k.startswith(pat + "/"))}
        if not hits:
            under = [k for k in presets if k.startswith(pat + "/")]
            hint = f" (presets under it: {', '.join(under)}; drop --exact to run them all)" if exact and under else ""
            raise ValueError(f"unknown preset {pat!r} for {experiment}{hint}; known: {', '.join(presets)}")
        out.update(hits)
    return out


def distinct_configs(configs: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``configs`` without repeats: a config equal to an earlier one (e.g. presets that differ only
    in a field every one of them got by ``--set``) is dropped. Returns the distinct configs and the
    ``(dropped, kept)`` name pairs, so the caller can say which runs were merged."""
    kept: dict[str, Any] = {}
    merged: list[tuple[str, str]] = []
    for name, cfg in configs.items():
        twin = next((k for k, v in kept.items() if v == cfg), None)
        if twin is None:
            kept[name] = cfg
        else:
            merged.append((name, twin))
    return kept, merged
