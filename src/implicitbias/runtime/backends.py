"""Where runs compute: ``map(run, configs) -> records``, in this process (``local``, the default) or
on a Ray cluster (``ray``, the optional extra ``pip install 'implicitbias[ray]'``).

docs/design.md, "Execution backends". A backend only turns configs into records; what is done is the
store's business (:func:`implicitbias.runtime.runner.run_all` skips complete runs before handing the rest to
a backend, and writes every record the backend yields, atomically, in the driver). Ray tasks return
their record to the driver instead of writing to a shared ``runs/`` themselves: workers then need no
shared file system, and one process writes the store, as with the local backend.

:meth:`Backend.map` yields events in the order they happen: :class:`Started` (local only: the run
starts now), :class:`Finished` (a record) and :class:`Failed` (an attempt failed; ``final`` when no
retry is left). Ray failures are retried ``retries`` times (a lost worker, a killed process, an
error raised by the run other than ``ValueError``/``TypeError``, which say the input is wrong and
would fail again); a run that still fails is reported, never dropped silently. In-process, an
exception from a run is raised as before (it is the computation's own).

A local Ray instance (no ``address``) has a watchdog (:mod:`implicitbias.runtime.ray_watchdog`, Linux): a
small process of its own that, when the driver is gone — closed, or killed with SIGKILL, which no
handler sees — stops every process of the instance within about two seconds; the next local start
stops an instance whose driver and watchdog were both killed. A cluster given by ``address`` is
never touched.

The numbers do not depend on the backend: a Ray task calls the same ``run`` on the same config (the
config hash is the driver's), and on CPU the records are bit-identical (tested in
``tests/test_backends_ray.py``).
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ray_watchdog

BACKENDS = ("local", "ray")
RAY_HINT = "pip install 'implicitbias[ray]'"
_CONNECT_TIMEOUT_S = 5.0  # a TCP check of --address before ray.init, which waits minutes on an unreachable one


class BackendError(ValueError):
    """A backend that cannot be used as asked (unknown name, Ray not installed, cluster unreachable):
    ``str()`` is one line."""


@dataclass(frozen=True)
class Started:
    key: str
    attempt: int = 1


@dataclass(frozen=True)
class Finished:
    """``where``: ``versions`` and ``platform`` of the process that computed the record (for the
    store's ``meta.json``), or None for this process."""

    key: str
    record: Any
    wall_seconds: float
    where: dict | None = None


@dataclass(frozen=True)
class Failed:
    key: str
    error: str  # one line
    attempt: int
    final: bool  # no retry left: the run is given up


Event = Started | Finished | Failed


def enable_compile_cache() -> None:
    """Reuse compiled XLA programs across invocations and processes (``IMPLICITBIAS_JAX_CACHE``, by
    default ``~/.cache/implicitbias/jax``; empty: off). Called by the CLI and by every Ray task."""
    import jax

    cache = os.environ.get("IMPLICITBIAS_JAX_CACHE", str(Path.home() / ".cache" / "implicitbias" / "jax"))
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class LocalBackend:
    """Runs one after another in this process (the default; nothing to install)."""

    name = "local"

    def map(self, run: Callable[[Any], Any], configs: Mapping[str, Any]) -> Iterator[Event]:
        for key, config in configs.items():
            yield Started(key)
            start = time.perf_counter()
            record = run(config)
            yield Finished(key, record, time.perf_counter() - start)

    def salvage(self) -> list[Finished]:
        return []  # nothing runs outside the generator

    def close(self) -> None:
        pass


def drive(pool, run, configs: Mapping[str, Any], retries: int, poll_s: float = 1.0) -> Iterator[Event]:
    """Submit every config to ``pool`` at once and yield what comes back, resubmitting a failed
    attempt while retries are left. ``pool`` (duck-typed, so the logic is tested without Ray):
    ``submit(run, key, config) -> handle``, ``wait(handles, timeout) -> [(handle, Finished-args or
    _Failure)]`` with the ready ones, ``pending`` (dict handle -> (key, attempt)) kept up to date
    here so that :meth:`RayBackend.salvage` sees it after an interrupt."""
    pool.pending.clear()
    for key, config in configs.items():
        pool.pending[pool.submit(run, key, config)] = (key, 1)
    while pool.pending:
        for handle, result in pool.wait(list(pool.pending), poll_s):
            key, attempt = pool.pending.pop(handle)
            if isinstance(result, _Failure):
                final = attempt > retries or not result.transient
                yield Failed(key, result.error, attempt, final)
                if not final:
                    pool.pending[pool.submit(run, key, configs[key])] = (key, attempt + 1)
            else:
                record, wall, where = result
                yield Finished(key, record, wall, where)


@dataclass(frozen=True)
class _Failure:
    error: str
    transient: bool  # worth another attempt (a lost worker, an I/O error), not a rejected input


def _where() -> dict:
    from .store import library_versions

    return {"versions": library_versions(), "platform": platform.platform(), "host": socket.gethostname()}


def _run_task(run, config):
    """The Ray task: ``run(config)`` in a worker process; returns ``(record, wall seconds, where)``.
    Errors come back as ``("error", one line, transient)`` rather than raised, so the driver gets one
    line instead of a remote traceback."""
    try:
        enable_compile_cache()
        start = time.perf_counter()
        record = run(config)
        return record, time.perf_counter() - start, _where()
    except (ValueError, TypeError) as e:
        return ("error", one_line(e), False)
    except Exception as e:
        last = traceback.extract_tb(e.__traceback__)[-1:]
        at = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
        return ("error", one_line(e) + at, True)


def import_ray():
    """Ray, or :class:`BackendError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise BackendError(f"the ray backend needs Ray, which is not installed: {RAY_HINT}") from None
    return ray


def check_address(address: str, timeout: float = _CONNECT_TIMEOUT_S) -> None:
    """A TCP connection to ``host:port`` / ``ray://host:port`` within ``timeout`` seconds, or
    :class:`BackendError`: ``ray.init`` on an address where nothing answers waits about two
    minutes and then exits the process. ``auto`` is left to Ray (it reads the local cluster file)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BackendError(f"--address {address!r}: expected auto, host:port or ray://host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or one_line(e))
        raise BackendError(f"cannot reach the Ray cluster at {address}: {reason} (within {timeout:g} s)") from None


class RayBackend:
    """Every run a Ray task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (fractions
    allowed), all submitted at once; Ray places them. ``address`` None starts a local Ray instance on
    this machine when there is something to run (stopped by :meth:`close`); else joins a running
    cluster at once (``auto``, ``host:port``, ``ray://host:port``). ``resources(key) -> (cpus,
    gpus)`` overrides the two per run.

    A run without GPUs gets ``JAX_PLATFORMS=cpu`` (on a GPU node it would otherwise take the
    accelerator it did not ask for); one with GPUs gets ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
    (runs sharing a GPU by fractions would each reserve most of its memory)."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_run: float = 1,
        gpus_per_run: float = 0,
        retries: int = 2,
        resources: Callable[[str], tuple[float, float]] | None = None,
    ):
        if cpus_per_run < 0 or gpus_per_run < 0 or (cpus_per_run == 0 and gpus_per_run == 0):
            raise BackendError("--cpus-per-run and --gpus-per-run must be >= 0 and not both 0")
        if retries < 0:
            raise BackendError(f"--retries must be >= 0, got {retries}")
        self.ray = import_ray()
        if address is not None:
            check_address(address)
        self.address, self.cpus, self.gpus, self.retries = address, cpus_per_run, gpus_per_run, retries
        self.resources = resources
        self.pending: dict = {}
        self._started = False
        self._remote = None
        self._watchdog: ray_watchdog.Watchdog | None = None
        if address is not None:
            self._start()  # joining is quick; a cluster that is not there is told before anything runs

    def _start(self) -> None:
        if self._started:
            return
        ray = self.ray
        kwargs: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.ERROR)
        if self.address is None:
            kwargs.update(address="local", include_dashboard=False)
            if ray_watchdog.WATCHABLE:
                ray_watchdog.reap_stale()  # an instance left by a driver killed together with its watchdog
                try:
                    self._watchdog = ray_watchdog.Watchdog()  # before ray.init: a kill during the start is covered
                except OSError as e:  # no process could be started (no fork, no python): say so, start nothing
                    raise BackendError(f"cannot start the local Ray instance's watchdog: {one_line(e)}") from None
        else:
            kwargs.update(address=self.address)
        try:
            ray.init(**kwargs)
        except (Exception, SystemExit) as e:  # Ray exits the process when the GCS never answers
            self._stop_watchdog()  # and it stops what the failed start left
            where = self.address or "a local Ray instance"
            raise BackendError(f"cannot start Ray on {where}: {one_line(e)}") from None
        if self._watchdog is not None:
            self._watchdog.tell(_session_dir(ray))
        self._started = True
        self._remote = ray.remote(_run_task)

    def _options(self, key: str) -> dict:
        cpus, gpus = self.resources(key) if self.resources else (self.cpus, self.gpus)
        env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if gpus else {"JAX_PLATFORMS": "cpu"}
        # retries are the driver's (drive), so each is reported; Ray's own would be silent
        return dict(num_cpus=cpus, num_gpus=gpus, max_retries=0, retry_exceptions=False,
                    runtime_env={"env_vars": env})

    def submit(self, run, key, config):
        return self._remote.options(**self._options(key)).remote(run, config)

    def wait(self, handles, timeout):
        ray = self.ray
        ready, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        if ready:  # and whatever else is done by now
            ready, _ = ray.wait(handles, num_returns=len(handles), timeout=0)
        return [(h, self._result(h)) for h in ready]

    def _result(self, handle):
        try:
            out = self.ray.get(handle)
        except self.ray.exceptions.RayError as e:  # a worker or node lost, a task cancelled
            return _Failure(f"{type(e).__name__}: {_first_sentence(str(e))}", True)
        if isinstance(out, tuple) and len(out) == 3 and isinstance(out[0], str) and out[0] == "error":
            return _Failure(out[1], out[2])
        return _same_version(out)

    def map(self, run: Callable[[Any], Any], configs: Mapping[str, Any]) -> Iterator[Event]:
        if not configs:
            return
        self._start()
        self._check_fits(configs)
        yield from drive(self, run, configs, self.retries)

    def _check_fits(self, configs: Mapping[str, Any]) -> None:
        """:class:`BackendError` if some run asks for more CPUs or GPUs than the whole cluster has
        now: Ray would keep such a task waiting for ever (it only warns, on the cluster's log)."""
        total = self.ray.cluster_resources()
        for i, (kind, flag) in enumerate((("CPU", "--cpus-per-run"), ("GPU", "--gpus-per-run"))):
            need = max((self.resources(k) if self.resources else (self.cpus, self.gpus))[i] for k in configs)
            have = total.get(kind, 0)
            if need > have:
                where = self.address or "the local Ray instance"
                raise BackendError(f"a run asks for {need:g} {kind} ({flag}) but {where} has {have:g} {kind} in all")

    def salvage(self) -> list[Finished]:
        """After an interrupt: the runs that finished but were not collected yet (to be stored), and
        cancel the others (their workers are killed)."""
        if not self._started or not self.pending:
            return []
        handles = list(self.pending)
        ready, rest = self.ray.wait(handles, num_returns=len(handles), timeout=0)
        out = []
        for h in ready:
            key, _ = self.pending.pop(h)
            result = self._result(h)
            if not isinstance(result, _Failure):
                out.append(Finished(key, *result))
        for h in rest:
            try:
                self.ray.cancel(h, force=True)
            except Exception:  # already finished or gone: nothing to cancel
                pass
        self.pending.clear()
        return out

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()  # a local instance stops; a cluster is left running
            self._started = False
        self._stop_watchdog()  # it stops whatever of the local instance the shutdown left

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None


def _same_version(result):
    """``result`` of a worker, or a :class:`_Failure` if the worker has another version of this
    library: its numbers could differ, and the run directory is named by the driver's version."""
    from .. import __version__

    theirs = (result[2] or {}).get("versions", {}).get("implicitbias")
    if theirs != __version__:
        return _Failure(f"the worker has implicitbias {theirs}, this driver {__version__}: install the same "
                        "version on every node", False)
    return result


def _first_sentence(text: str) -> str:
    """Ray's error texts run to paragraphs (log paths, IDs): the first sentence, on one line."""
    text = " ".join(text.split())
    cut = text.find(". ")
    return text if cut < 0 else text[: cut + 1]


def make(
    name: str,
    *,
    address: str | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
    retries: int | None = None,
):
    """The backend called ``name`` (``local`` or ``ray``) with its options, or :class:`BackendError`
    (one line): an unknown name, Ray options given to ``local``, Ray missing, an unreachable address."""
    if name == "local":
        given = [flag for flag, v in (("--address", address), ("--cpus-per-run", cpus_per_run),
                                      ("--gpus-per-run", gpus_per_run), ("--retries", retries)) if v is not None]
        if given:
            raise BackendError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only to --backend ray")
        return LocalBackend()
    if name == "ray":
        return RayBackend(address, 1 if cpus_per_run is None else cpus_per_run,
                          0 if gpus_per_run is None else gpus_per_run, 2 if retries is None else retries)
    raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


def _session_dir(ray) -> str | None:
    """The session directory of the instance ``ray.init`` just started (Ray has no public call for
    it); None if this Ray version hides it (the watchdog then follows the process tree only)."""
    try:
        return str(ray._private.worker._global_node.get_session_dir_path())
    except Exception:
        return None
