"""Run storage: ``runs/<experiment>/<config hash>/{config.json, metrics.json, meta.json, arrays.npz}``.

Writes are atomic: a run is written into a hidden temporary directory next to its final place and
renamed into place only when complete, so an interrupted run leaves no half-written directory and a
directory that exists is complete. A complete run is not recomputed unless forced.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .record import Record, config_hash, config_to_dict

FILES = ("config.json", "metrics.json", "meta.json", "arrays.npz")
_PACKAGES = ("jax", "jaxlib", "equinox", "optax", "diffrax", "numpy")


def library_versions() -> dict[str, str]:
    """Versions of the numerical stack, recorded with every result."""
    out = {"implicitbias": __version__, "python": platform.python_version()}
    try:  # the backend changes float results (GPU vs CPU reductions): record where it ran
        import jax

        out["backend"] = f"{jax.default_backend()}: {jax.devices()[0].device_kind}"
    except Exception:  # pragma: no cover - jax is a dependency
        out["backend"] = "unknown"
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            out[name] = "missing"
    return out


@dataclass(frozen=True)
class StoredRun:
    """A complete run read back from disk."""

    path: Path
    experiment: str
    preset: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    meta: dict[str, Any]

    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "arrays.npz") as data:
            return {k: data[k] for k in data.files}


class Store:
    """The ``runs/`` directory."""

    def __init__(self, root: str | os.PathLike = "runs"):
        self.root = Path(root)

    def run_dir(self, experiment: str, config) -> Path:
        return self.root / experiment / config_hash(experiment, config, __version__)

    def is_complete(self, experiment: str, config) -> bool:
        d = self.run_dir(experiment, config)
        return d.is_dir() and all((d / f).exists() for f in FILES)

    def save(self, experiment: str, config, record: Record, *, preset: str | None, wall_seconds: float) -> Path:
        """Write a run atomically (replacing an existing one, as ``--force`` asks)."""
        final = self.run_dir(experiment, config)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
        try:
            _write_json(
                tmp / "config.json", {"experiment": experiment, "preset": preset, "config": config_to_dict(config)}
            )
            _write_json(tmp / "metrics.json", record.metrics)
            _write_json(
                tmp / "meta.json",
                {
                    "versions": library_versions(),
                    "wall_seconds": wall_seconds,
                    "seeds": list(getattr(config, "seeds", ())),
                    "hash": final.name,
                    "platform": platform.platform(),
                },
            )
            np.savez_compressed(tmp / "arrays.npz", **record.arrays)
            if final.exists():
                old = final.with_name(f".old-{final.name}-{os.getpid()}")
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def load(self, path: Path) -> StoredRun:
        cfg = json.loads((path / "config.json").read_text())
        return StoredRun(
            path,
            cfg["experiment"],
            cfg.get("preset"),
            cfg["config"],
            json.loads((path / "metrics.json").read_text()),
            json.loads((path / "meta.json").read_text()),
        )

    def runs(self, experiment: str | None = None) -> Iterator[StoredRun]:
        """Every complete run (hidden temporary directories are skipped), oldest first."""
        if not self.root.is_dir():
            return
        exps = [self.root / experiment] if experiment else sorted(p for p in self.root.iterdir() if p.is_dir())
        dirs = [
            d
            for e in exps
            if e.is_dir()
            for d in e.iterdir()
            if d.is_dir() and not d.name.startswith(".") and all((d / f).exists() for f in FILES)
        ]
        for d in sorted(dirs, key=lambda p: (p / "meta.json").stat().st_mtime):
            yield self.load(d)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj)}")
