"""The watchdog of a local Ray instance: when the driver that started the instance is gone — closed,
or killed with SIGKILL, which no handler of its own sees — every process of the instance is stopped
within about two seconds (a poll of 0.5 s, then SIGTERM and SIGKILL after 1 s of grace).

Without it, Ray's ``DashboardAgent`` and ``RuntimeEnvAgent`` outlive a driver killed with SIGKILL by
about a minute (``docs/findings/ray-backend.md``). :class:`Watchdog` starts this file as a script,
``python -I ray_watchdog.py watch ...``, in a session of its own, so that neither Ctrl-C in the
terminal nor the driver's death reaches it. It therefore needs only the standard library and imports
nothing of this package (which imports JAX).

Each instance is also recorded in a state file (``IMPLICITBIAS_RAY_STATE_DIR``, by default
``~/.cache/implicitbias/ray``) while it runs, so that :func:`reap_stale`, called by the next local
start, stops an instance whose driver and watchdog were both killed. Only processes of this user are
ever signalled, and a cluster joined by address is never recorded. Linux only (it reads /proc):
elsewhere :data:`WATCHABLE` is false and there is no watchdog.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

WATCHABLE = sys.platform.startswith("linux")
STATE_ENV = "IMPLICITBIAS_RAY_STATE_DIR"
POLL_S = 0.5  # how often the watchdog checks the driver and follows the instance's process tree
GRACE_S = 1.0  # SIGTERM, then SIGKILL to what is left after this


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or Path.home() / ".cache" / "implicitbias" / "ray")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks since boot) of ``pid``; None if there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, start: int) -> bool:
    """``pid`` runs (is not a zombie) and is the process that started at ``start``, not a later one
    that got the same pid."""
    st = _stat(pid)
    return st is not None and st[0] not in "ZXx" and st[2] == start


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every running process of this user."""
    uid, out = os.getuid(), {}
    for p in Path("/proc").iterdir():
        try:
            if not p.name.isdigit() or p.stat().st_uid != uid:
                continue
        except OSError:  # gone meanwhile
            continue
        st = _stat(int(p.name))
        if st is not None and st[0] not in "ZXx":
            out[int(p.name)] = (st[1], st[2])
    return out


def _subtree(roots: set[int], procs: Mapping[int, tuple[int, int]]) -> set[int]:
    """``roots`` (those in ``procs``) and every process under them."""
    out = frontier = {pid for pid in roots if pid in procs}
    while frontier:
        frontier = {pid for pid, (ppid, _) in procs.items() if ppid in frontier and pid not in out}
        out = out | frontier
    return out


def _uses_session(pid: int, session_dir: str) -> bool:
    """``pid`` is one of the instance's own processes: its command line names ``session_dir`` (the
    GCS, the raylet, the monitors, the dashboard), or its title is ``ray::...`` (which replaced the
    command line: ``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``, ``ray::IDLE``, a worker running
    a task) and it has a file inside ``session_dir`` open for writing (its log). A driver that joined
    the instance by address writes a log there too but is neither, and is left alone; so is one that
    only reads a log there (``tail -f``)."""
    session_dir = session_dir.rstrip("/")
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if re.search(re.escape(session_dir.encode()) + rb"(?![\w.-])", cmdline):
            return True
        if not cmdline.startswith(b"ray::"):
            return False
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith(session_dir + "/"):
                continue
            flags = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:", 1)[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if flags & (os.O_WRONLY | os.O_RDWR):
            return True
    return False


def instance_processes(session_dir: str | None, known: Mapping[int, int] | None = None,
                       exclude: set[int] = frozenset()) -> set[int]:
    """The running processes of one local Ray instance: those of ``known`` (pid -> start time) that
    still run, those of ``session_dir`` (:func:`_uses_session`), and every process under them;
    never one of ``exclude`` (nor anything under it, unless it is one of the above), nor this process."""
    procs = _processes()
    skip = set(exclude) | {os.getpid()}
    seeds = {pid for pid, (_, start) in procs.items() if (known or {}).get(pid) == start}
    if session_dir:
        seeds |= {pid for pid in procs if pid not in seeds and pid not in skip and _uses_session(pid, session_dir)}
    return _subtree(seeds - skip, procs) - skip


def reap(session_dir: str | None, known: Mapping[int, int] | None = None, exclude: set[int] = frozenset(),
         grace: float = GRACE_S) -> list[int]:
    """Stop every process of one local Ray instance (:func:`instance_processes`): SIGTERM, SIGKILL to
    those left after ``grace`` seconds; again (at most three rounds) for any that appeared meanwhile
    (a raylet starting a worker). Returns the pids signalled."""
    done: set[int] = set()
    for _ in range(3):
        starts = {pid: st[2] for pid in instance_processes(session_dir, known, exclude) if (st := _stat(pid))}
        if not starts:
            break
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid, start in starts.items():
                if _alive(pid, start):
                    try:
                        os.kill(pid, sig)
                    except OSError:  # gone meanwhile
                        pass
            deadline = time.monotonic() + grace
            while any(_alive(p, s) for p, s in starts.items()) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not any(_alive(p, s) for p, s in starts.items()):
                break
        done |= set(starts)
    return sorted(done)


def reap_stale(directory: Path | str | None = None) -> list[int]:
    """Stop the instances recorded in ``directory`` (default :func:`state_dir`) whose driver is gone
    (it and its watchdog were killed) and remove their state files; an instance whose driver still
    runs is left alone. Returns the pids signalled."""
    out: list[int] = []
    for f in sorted(Path(directory or state_dir()).glob("*.json")):
        try:
            state = json.loads(f.read_text())
            driver, start, session = int(state["driver_pid"]), int(state["driver_start"]), str(state["session_dir"])
        except FileNotFoundError:  # its watchdog removed it meanwhile
            continue
        except (OSError, ValueError, KeyError, TypeError):  # damaged: nothing to act on
            f.unlink(missing_ok=True)
            continue
        if _alive(driver, start):
            continue
        out += reap(session, exclude={driver})
        f.unlink(missing_ok=True)
    return out


class Watchdog:
    """The driver's end of a watchdog (:func:`_watch`) of ``driver`` (this process by default), to
    be started before ``ray.init`` (a kill during the start is covered too): :meth:`tell` it the
    session directory once Ray has started, :meth:`stop` it after ``ray.shutdown`` (it then stops
    whatever is left, and exits). The pipe between the two is this process's alone (its end is not
    inherited by Ray's processes): it closes when this process dies, however it dies, and the
    watchdog wakes at once."""

    def __init__(self, driver: int | None = None, directory: Path | str | None = None):
        driver = os.getpid() if driver is None else driver
        st = _stat(driver)
        if st is None:
            raise ProcessLookupError(f"no process {driver} to watch")
        r, self._w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", str(Path(__file__).resolve()), "watch", str(driver), str(st[2]), str(r),
                 str(directory or state_dir())],
                pass_fds=(r,), start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        finally:
            os.close(r)

    def tell(self, session_dir: str | None) -> None:
        try:
            os.write(self._w, (session_dir or "").encode() + b"\n")
        except OSError:  # the watchdog is gone: nothing to tell
            pass

    def stop(self, timeout: float = 10.0) -> None:
        if self._w is not None:
            os.close(self._w)
            self._w = None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:  # it goes on in its own session and exits when done
            pass


def _watch(driver: int, driver_start: int, fd: int, directory: str) -> None:
    """The watchdog's loop. Until told the session directory, every new child of the driver is the
    instance's (``ray.init`` is starting it); from then on also every process under those. It ends
    when the driver is gone or closes its end of ``fd`` (or on SIGTERM): then it stops the instance's
    processes (:func:`reap`), removes the state file and exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # reap, then exit
    me = os.getpid()
    foreign = {pid for pid, (ppid, _) in _processes().items() if ppid == driver}  # its children before ray.init
    known: dict[int, int] = {}
    session: str | None = None
    told, state = False, None
    try:
        while _alive(driver, driver_start):
            if select.select([fd], [], [], POLL_S)[0]:
                data = os.read(fd, 4096)
                if not data:
                    break  # the driver closed it (close()) or died
                if not told:
                    told, session = True, data.split(b"\n", 1)[0].decode() or None
                    if session:
                        state = Path(directory) / f"{driver}-{Path(session).name}.json"
                        _write_state(state, driver, driver_start, session)
            procs = _processes()
            roots = {pid for pid, (_, start) in procs.items() if known.get(pid) == start}
            if not told:
                roots |= {pid for pid, (ppid, _) in procs.items() if ppid == driver and pid not in foreign}
            known = {pid: procs[pid][1] for pid in _subtree(roots, procs) - {me, driver}}
    finally:
        reap(session, known, exclude={driver})
        if state is not None:
            state.unlink(missing_ok=True)


def _write_state(path: Path, driver: int, driver_start: int, session: str) -> None:
    """The record :func:`reap_stale` reads, written whole (a temporary file renamed); none if the
    directory cannot be written (the watchdog works without it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"driver_pid": driver, "driver_start": driver_start, "session_dir": session,
                                   "watchdog_pid": os.getpid()}))
        os.replace(tmp, path)
    except OSError:
        pass


if __name__ == "__main__":
    if sys.argv[1:2] != ["watch"] or len(sys.argv) != 6:
        sys.exit("usage: python -I ray_watchdog.py watch DRIVER_PID DRIVER_START FD STATE_DIR")
    _watch(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
