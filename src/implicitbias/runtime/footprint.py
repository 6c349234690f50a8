"""Up-front memory estimates: refuse a config whose arrays cannot fit, before anything is computed.

An experiment may define ``footprint_bytes(config) -> int``, the bytes that the largest arrays of a run
of ``config`` take, and ``footprint_terms(config) -> dict[str, int]``, those arrays by name (optional
members of :class:`~implicitbias.experiments.Experiment`). :func:`check` (called by the CLI on every
config before it computes anything) looks them up with ``getattr``, so experiments without one are
never refused and the CLI stays generic. Each estimate is a pure function of the config (no JAX, no
allocation) that lives beside its task (e.g. :func:`implicitbias.tasks.teacher_student.footprint_terms`).

Each estimate counts only arrays a run certainly holds at one time (a *lower bound* of its peak:
intermediates that XLA may fuse away are left out), so a refused config cannot have fitted; a config
that passes can still fail near the limit. "Available" is the memory the operating system can still
give this process (:func:`available_bytes`); on an accelerator the larger of that and the device's
memory, as arrays may live on either.
"""

from __future__ import annotations

import os

# --------------------------------------------------------------------------------------------
# available memory and the check
# --------------------------------------------------------------------------------------------


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text)
    except (OSError, ValueError):
        return None  # missing, unreadable, or "max"


def _stat(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_headroom() -> int | None:
    """What a cgroup memory limit (v2, else v1) still leaves this process: limit minus usage, usage
    less its reclaimable page cache (inactive files); None without a limit."""
    for limit, usage, stat, key in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
            "/sys/fs/cgroup/memory/memory.stat",
            "total_inactive_file",
        ),
    ):
        lim, use = _read_int(limit), _read_int(usage)
        if lim is not None and use is not None and lim < 2**60:  # v1 writes ~2^63 for "no limit"
            return max(0, lim - max(0, use - _stat(stat, key)))
    return None


def available_bytes() -> int | None:
    """Memory the operating system can still give this process, in bytes; None if unknown.

    Linux: ``MemAvailable`` of ``/proc/meminfo`` (free memory plus reclaimable caches), lowered to
    the headroom under a cgroup limit (containers); elsewhere ``psutil`` if installed, else
    ``os.sysconf`` (available pages, or all physical pages). Swap is not counted."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            import psutil  # optional: only if already installed

            avail = int(psutil.virtual_memory().available)
        except Exception:  # not installed, or no answer on this platform
            pass
    if avail is None:
        for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
            try:
                avail = os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
                break
            except (ValueError, OSError, AttributeError):
                continue
    cg = _cgroup_headroom()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def _device_bytes() -> int | None:
    """Memory of the default JAX device when it is an accelerator (None on CPU or if unknown)."""
    try:
        import jax

        if jax.default_backend() == "cpu":
            return None
        stats = jax.devices()[0].memory_stats() or {}
        limit = stats.get("bytes_limit")
        return int(limit) if limit else None
    except Exception:  # no device answer: judge by host memory alone
        return None


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``; ``'1.23e+07 PiB'`` from 10,000 PiB on."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    for unit in units[:-1]:
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB" if abs(n) < 1e4 else f"{n:.2e} PiB"


def check(experiment, configs: dict[str, object], available: int | None = None) -> None:
    """Refuse (``ValueError``, one line) the first ``name -> config`` whose ``footprint_bytes``
    exceeds the available memory (``available``, default :func:`available_bytes`). Experiments
    without the hook, or an unknown amount of memory, pass."""
    hook = getattr(experiment, "footprint_bytes", None)
    if hook is None or not configs:
        return
    needs = {name: int(hook(cfg)) for name, cfg in configs.items()}
    if available is None:
        available = available_bytes()
        if available is not None and max(needs.values()) > available:
            available = max(available, _device_bytes() or 0)
    if available is None:
        return
    for name, need in needs.items():
        if need <= available:
            continue
        terms = getattr(experiment, "footprint_terms", None)
        largest = ""
        if terms is not None:
            what, size = max(terms(configs[name]).items(), key=lambda kv: kv[1])
            largest = f"; largest: {what}, {format_bytes(size)}"
        label = f"{getattr(experiment, 'NAME', '')} {name}".strip()
        raise ValueError(
            f"{label} refused before computing: its arrays need at least {format_bytes(need)}, more than the "
            f"{format_bytes(available)} of memory available{largest}"
        )
