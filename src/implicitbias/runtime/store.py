"""Run storage: ``runs/<experiment>/<config hash>/{config.json, metrics.json, meta.json, arrays.npz}``.

Writes are atomic: a run is written into a hidden temporary directory next to its final place and
renamed into place only when complete, so an interrupted run leaves no half-written directory.
A run counts as stored only if it *loads*: every JSON file parses, the config matches the hash it
was stored under and every array reads back (:meth:`Store.damage`). A damaged run (a truncated
file, a disk error, an edit by hand) is skipped by readers with one warning naming its directory,
and recomputed by the runner, which first moves the damaged copy aside to a hidden
``.damaged-<hash>-...`` directory (kept, never deleted). A complete run is not recomputed unless
forced.

Two processes saving the same run are safe: without ``replace`` the second keeps the first's
complete result; with it (``--force``) the second replaces the first (the previous copy is moved
aside, then deleted), retrying when a third writer gets in between. Directories and files are made
with the user's umask. Failures to write (a full or read-only disk) raise :class:`StoreError`, an
``OSError`` whose message is one line naming the path and the errno.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import platform
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..record import Record, config_hash, config_to_dict, strict_json

FILES = ("config.json", "metrics.json", "meta.json", "arrays.npz")
_PACKAGES = ("jax", "jaxlib", "equinox", "optax", "diffrax", "numpy")
_PROBE_BYTES = 64 * 1024  # what the writability probe writes: a full disk fails it, not only a read-only one
_log = logging.getLogger(__name__)


class StoreError(OSError):
    """A path of the store (or the report) that cannot be written or moved. ``str()`` is one line
    naming the path and the errno, e.g. ``cannot write to runs/table1: No space left on device
    (ENOSPC, errno 28)``. Made by :meth:`of`."""

    @classmethod
    def of(cls, path, cause: OSError, action: str = "write to") -> StoreError:
        code = cause.errno
        reason = cause.strerror or str(cause) or type(cause).__name__
        where = f" ({errno.errorcode.get(code, '?')}, errno {code})" if code else ""
        return cls(code, f"cannot {action} {path}: {reason}{where}")

    def __str__(self) -> str:
        return str(self.strerror)


class DamagedRun(ValueError):
    """A stored run directory that does not load; ``reason`` is one line (which file, what is wrong)."""

    def __init__(self, path, reason: str):
        super().__init__(f"damaged run {path}: {reason}")
        self.path, self.reason = Path(path), reason


def library_versions() -> dict[str, str]:
    """Versions of the numerical stack, recorded with every result (looked up once per process)."""
    return dict(_library_versions())


@functools.cache
def _library_versions() -> dict[str, str]:
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


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder renamed into place
    (``os.replace``): a reader never sees a half-written file, and on a failed write (a full or
    read-only disk) the previous version stays as it was and no temporary file is left. The file
    gets the user's umask. Raises :class:`StoreError` (one line: the path and the errno)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = _fresh_file(path.parent, f".{path.name}.")
    except OSError as e:
        raise StoreError.of(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError.of(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class Store:
    """The ``runs/`` directory. ``warn`` receives the one-line warnings (a damaged run skipped or
    moved aside); by default they go to the ``implicitbias.runtime.store`` logger."""

    def __init__(self, root: str | os.PathLike = "runs", warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.warn = warn if warn is not None else _log.warning
        self._warned: set[Path] = set()

    def run_dir(self, experiment: str, config) -> Path:
        """``root/<experiment>/<hash>``: :func:`~implicitbias.record.config_hash` of the config as
        ``config.json`` stores it (the same for every config of finite numbers; one with NaN or inf
        is hashed with ``null`` there, as stored, so its directory still checks against its config)."""
        return self.root / experiment / config_hash(experiment, strict_json(config_to_dict(config)), __version__)

    def is_complete(self, experiment: str, config) -> bool:
        d = self.run_dir(experiment, config)
        return d.is_dir() and self.damage(d) is None

    def damage(self, path: Path) -> str | None:
        """Why the run directory ``path`` does not load (one line), or None if it does."""
        try:
            self.load(path)
        except DamagedRun as e:
            return e.reason
        return None

    def load(self, path: Path) -> StoredRun:
        """Read a run back, checking all of it: the three JSON files parse as objects, ``config.json``
        has its experiment and config and hashes to the ``hash`` recorded in ``meta.json``, and every
        array of ``arrays.npz`` reads. Raises :class:`DamagedRun` (naming the directory) otherwise."""
        path = Path(path)
        cfg = _read_json(path, "config.json")
        metrics = _read_json(path, "metrics.json")
        meta = _read_json(path, "meta.json")
        if not isinstance(cfg.get("experiment"), str) or not isinstance(cfg.get("config"), dict):
            raise DamagedRun(path, "config.json: no experiment name or no config")
        if not isinstance(cfg.get("preset"), (str, type(None))):
            raise DamagedRun(path, "config.json: the preset is not a string")
        version = (meta.get("versions") or {}).get("implicitbias") if isinstance(meta.get("versions"), dict) else None
        if not isinstance(version, str) or not isinstance(meta.get("hash"), str):
            raise DamagedRun(path, "meta.json: no library version or no hash")
        if config_hash(cfg["experiment"], cfg["config"], version) != meta["hash"]:
            raise DamagedRun(path, f"config.json does not match the hash {meta['hash']} it was stored under")
        try:
            with np.load(path / "arrays.npz") as data:
                for k in data.files:
                    data[k]
        except FileNotFoundError:
            raise DamagedRun(path, "arrays.npz is missing") from None
        except Exception as e:  # BadZipFile, EOFError, ValueError, zlib.error, OSError: all mean "does not load"
            raise DamagedRun(path, f"arrays.npz: {_one_line(e)}") from None
        return StoredRun(path, cfg["experiment"], cfg.get("preset"), cfg["config"], metrics, meta)

    def check_writable(self, experiment: str) -> Path:
        """Make ``root/experiment`` and write (then remove) a small probe file in it, so a read-only
        or full store fails here, before any computing. Raises :class:`StoreError`."""
        d = self.root / experiment
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, probe = _fresh_file(d, ".probe-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(b"\0" * _PROBE_BYTES)
            finally:
                probe.unlink(missing_ok=True)
        except OSError as e:
            raise StoreError.of(d, e) from None
        return d

    def set_aside(self, path: Path, reason: str) -> Path | None:
        """Move the damaged run directory ``path`` to a hidden ``.damaged-<name>-<time>-...`` beside it
        (kept, not deleted; readers skip hidden directories) and warn once. Returns the new path, or
        None if ``path`` was gone already (another process moved or replaced it)."""
        path = Path(path)
        aside = path.with_name(f".damaged-{path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError.of(path, e, "move aside the damaged run") from None
        self.warn(f"damaged run {path} ({reason}): moved to {aside.name}, recomputing")
        return aside

    def save(
        self,
        experiment: str,
        config,
        record: Record,
        *,
        preset: str | None,
        wall_seconds: float,
        replace: bool = True,
        where: dict | None = None,
    ) -> Path:
        """Write a run atomically. An existing complete run is replaced (as ``--force`` asks), or with
        ``replace=False`` kept (another process finished the same run first); an existing damaged one
        is always replaced and kept aside. Safe when several processes save the same run at once.
        ``where``: ``versions``, ``platform`` (and ``host``) of the process that computed the record
        when it is not this one (a Ray worker), recorded in ``meta.json`` in place of this process's.
        Raises :class:`StoreError` if the store cannot be written (nothing half-written is left)."""
        final = self.run_dir(experiment, config)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = _fresh_dir(final.parent, f".tmp-{final.name}-")
        except OSError as e:
            raise StoreError.of(final.parent, e) from None
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
                    **(where or {}),
                },
            )
            np.savez_compressed(tmp / "arrays.npz", **record.arrays)
            self._install(tmp, final, replace)
        except StoreError:
            raise
        except OSError as e:
            raise StoreError.of(final, e) from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _install(self, tmp: Path, final: Path, replace: bool) -> None:
        """Rename the complete ``tmp`` to ``final``. A rename onto an existing run fails (ENOTEMPTY)
        instead of racing: then keep that run (``replace=False``, and it loads), or move it aside and
        try again; each retry means another writer installed its run in between, so this ends."""
        while True:
            try:
                os.rename(tmp, final)
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            if not replace and self.damage(final) is None:
                return  # the caller removes tmp
            old = final.with_name(f".old-{final.name}-{os.getpid()}-{secrets.token_hex(3)}")
            try:
                os.rename(final, old)
            except FileNotFoundError:
                continue  # another writer moved it first
            reason = self.damage(old)
            if reason is None:
                shutil.rmtree(old, ignore_errors=True)
            else:  # never delete a damaged copy: it may be all that is left of a long run
                kept = final.with_name(old.name.replace(".old-", ".damaged-", 1))
                os.rename(old, kept)
                self.warn(f"damaged run {final} ({reason}): replaced, the damaged copy is kept as {kept.name}")

    def runs(self, experiment: str | None = None) -> Iterator[StoredRun]:
        """Every stored run that loads, oldest first. Hidden directories (temporary, set aside) are
        skipped silently; a damaged run is skipped with one warning naming its directory (once per
        ``Store``)."""
        if not self.root.is_dir():
            return
        exps = [self.root / experiment] if experiment else sorted(p for p in self.root.iterdir() if p.is_dir())
        found = []
        for e in exps:
            if not e.is_dir():
                continue
            for d in e.iterdir():
                if not d.is_dir() or d.name.startswith(".") or not any((d / f).exists() for f in FILES):
                    continue
                run = self._load_or_warn(d)
                if run is not None:
                    try:
                        found.append(((d / "meta.json").stat().st_mtime, run))
                    except FileNotFoundError:  # replaced by another process just now
                        continue
        for _, run in sorted(found, key=lambda t: t[0]):
            yield run

    def _load_or_warn(self, d: Path) -> StoredRun | None:
        for attempt in range(2):  # a second try: another process may have been replacing it
            try:
                return self.load(d)
            except DamagedRun as e:
                if not d.is_dir():
                    return None  # moved away by another process, not damaged
                if attempt:
                    if d not in self._warned:
                        self._warned.add(d)
                        self.warn(f"skipping damaged run {d}: {e.reason}")
                    return None
        return None


def _read_json(path: Path, name: str) -> dict:
    try:
        obj = json.loads((path / name).read_text())
    except FileNotFoundError:
        raise DamagedRun(path, f"{name} is missing") from None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DamagedRun(path, f"{name}: {_one_line(e)}") from None
    if not isinstance(obj, dict):
        raise DamagedRun(path, f"{name}: not a JSON object")
    return obj


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """A new directory ``parent/<prefix><random>`` made with the user's umask (``mkdtemp`` makes 0700)."""
    for _ in range(100):
        d = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(d)
            return d
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(parent))  # pragma: no cover


def _fresh_file(parent: Path, prefix: str) -> tuple[int, Path]:
    """A new file ``parent/<prefix><random>.tmp`` opened for writing, with the user's umask (``mkstemp``
    makes 0600). Returns ``(fd, path)``."""
    for _ in range(100):
        p = parent / f"{prefix}{secrets.token_hex(4)}.tmp"
        try:
            return os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), p
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(parent))  # pragma: no cover


def _write_json(path: Path, obj) -> None:
    text = json.dumps(strict_json(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    path.write_text(text + "\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj)}")
