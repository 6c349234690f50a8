"""What a run produces and how it is named: :class:`Record`, :func:`config_to_dict`, :func:`config_hash`.

The store, the runner and the report know runs only through these (docs/design.md: "the store knows
only records").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Record:
    """The result of one run: JSON-able ``metrics`` and named NumPy ``arrays``."""

    metrics: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def strict_json(obj):
    """``obj`` with every float that is NaN or infinite replaced by ``None`` (lists, tuples, dicts and
    NumPy values walked), so ``json.dumps(..., allow_nan=False)`` writes JSON that strict parsers
    accept. A run that lost a number says so in its own flags (``diverged``), not with ``NaN``."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def config_to_dict(config) -> dict[str, Any]:
    """Plain JSON-able dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_hash(experiment: str, config, version: str) -> str:
    """Stable 12-hex-digit hash of the experiment name, the config and the library version. ``config``: a
    config dataclass, or the dict of one (:func:`config_to_dict`, e.g. read back from a stored run)."""
    as_dict = config if isinstance(config, dict) else config_to_dict(config)
    payload = json.dumps({"experiment": experiment, "config": as_dict, "version": version},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
