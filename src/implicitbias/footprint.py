"""Up-front memory estimates: refuse a config whose arrays cannot fit, before anything is computed.

An experiment module may define ``footprint_bytes(config) -> int``, the bytes that the largest arrays
of a run of ``config`` take. :func:`check` (called by the CLI on every config before it computes
anything) looks the hook up with ``getattr``, so experiments without one are never refused and the
CLI stays generic. The estimates here are pure functions of the config (no JAX, no allocation),
one per task, registered by the experiment modules (``footprint_bytes = footprint.teacher_student``).

Each estimate counts only arrays a run certainly holds at one time (a *lower bound* of its peak:
intermediates that XLA may fuse away are left out), so a refused config cannot have fitted; a config
that passes can still fail near the limit. "Available" is the memory the operating system can still
give this process (:func:`available_bytes`); on an accelerator the larger of that and the device's
memory, as arrays may live on either.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

F64, F32, I32 = 8, 4, 4


def _estimate(terms: Callable[[object], dict[str, int]]) -> Callable[[object], int]:
    """``footprint_bytes`` from a function giving ``{description: bytes}`` of the largest arrays;
    the terms stay reachable as ``.terms`` (:func:`check` names the largest in its message)."""

    def total(config) -> int:
        return int(sum(terms(config).values()))

    total.terms = terms  # type: ignore[attr-defined]
    total.__name__, total.__doc__ = terms.__name__, terms.__doc__
    return total


# --------------------------------------------------------------------------------------------
# per task
# --------------------------------------------------------------------------------------------


def _teacher_student_terms(c) -> dict[str, int]:
    """Table 1 / dynamics (:class:`implicitbias.tasks.teacher_student.Config`): for gradient flow the
    stiff solver's ``(d, d)`` Jacobian and its factorisation per seed; for GD the Keras init draws
    (``d^2`` Philox words, one seed at a time), the full ``(d, d)`` kernels with their gradients and
    updates (adaptive rate), the trajectory logs (``max_steps / log_every + 1`` rows of ``d + 4`` values per
    seed, allocated up front), the ``(horizon, d)`` powers, the data and, in a network, the held-out
    inputs and the ``(m, m)`` layers with their Adam moments."""
    S, d = len(c.seeds), c.d
    out: dict[str, int] = {}
    if c.setting == "per_theorem":
        db = 32 * math.ceil(d / 32)  # the flow pads d to a multiple of 32 (teacher_student.run_flow)
        out[f"gradient-flow Jacobians (d, d) and their factorisations, d={d} x {S} seeds"] = 2 * S * db * db * F64
        out[f"impulse-response powers (horizon, d), d={d} x {S} seeds"] = S * max(c.horizon, c.L) * d * F64
        return out
    b = F64 if c.dtype == "float64" else F32
    if c.init_rng == "keras":
        out[f"Keras initial draws of a (d, d) matrix, d={d}"] = 8 * d * d  # uint64 Philox words, one seed at a time
    if c.uses_full_kernel:
        # the kernels, their gradients and the projected updates (peak RSS of beyond_theorem/L6 at d=3000,
        # max_steps=300: 1.0 GiB above a d=10 run, this count 0.9 GiB)
        out[f"full (d, d) kernels, gradients and updates, d={d} x {S} seeds"] = 3 * S * d * d * b
    rows = math.ceil(c.max_steps / c.log_every) + 1
    out[f"trajectory logs of {rows} rows (max_steps / log_every) x (d + 4) values, d={d} x {S} seeds"] = (
        S * rows * ((d + 4) * b + I32)
    )
    out[f"impulse-response powers (horizon, d) and their gradient, d={d} x {S} seeds"] = (
        2 * S * max(c.horizon, c.L) * d * b
    )
    n = c.n_baseline + c.n_special + len(c.extra_sequences)
    out[f"training data ({n}, L) x {S} seeds"] = S * n * (c.L + 1) * b
    if c.setting == "ssm_in_nn":
        out[f"held-out inputs (n_test, test_length) and the network on them, n_test={c.n_test} x {S} seeds"] = (
            S * c.n_test * (c.test_length + 1 + c.m) * b
        )
        out[f"network layers (m, m) with gradients and Adam moments, m={c.m} x {S} seeds"] = (
            4 * S * c.depth * c.m * c.m * b
        )
    return out


def _realworld_terms(c) -> dict[str, int]:
    """Real world (:class:`implicitbias.experiments.realworld.Config`): the data set as the loader
    holds it (CIFAR-10: all six raw batches, then float64 sequences and their float32 standardised
    copy of the kept images), a training set with its poisons, and one value per position, channel
    and layer for the larger of a training minibatch and a brewing group (the activations kept for
    the backward pass)."""
    if c.dataset == "cifar10":
        L, C, n_tr, n_te = 1024, 3, c.n_train, c.n_test or 10_000
        raw = 60_000 * 3072
    elif c.dataset == "mnist1d":  # 4,000 training and 1,000 test sequences of length 40
        L, C, n_tr, n_te = 40, 1, c.n_train, 1000
        raw = 5000 * 40 * F64
    elif c.dataset != "digits":  # a UCR set: its archive pooled and re-split
        L, C = c.view.height, c.view.channels
        n_tr, n_te = c.n_train, c.ucr_size - (c.n_pool or c.n_train)
        raw = c.ucr_size * L * C * F64
    else:  # digits: 1,797 images of 8 x 8
        L, C, n_tr, n_te = 64, 1, c.n_train, 1797 - c.n_train
        raw = 1797 * 64 * F64
    n_pois = c.n_poisons
    group = math.ceil(n_pois / max(1, c.target_groups))
    rows = max(c.batch_size, group, min(512, n_tr + n_pois))  # 512: evaluation chunks
    return {
        f"{c.dataset} data, {n_tr} training and {n_te} test sequences of ({L}, {C})": raw
        + (n_tr + n_te) * L * C * (F64 + F32),
        f"a training set with {n_pois} poisons": (n_tr + n_pois) * L * C * F32,
        f"activations of {rows} sequences, d_model={c.d_model} x n_layers={c.n_layers}": rows
        * L
        * c.d_model
        * c.n_layers
        * F32,
    }


teacher_student = _estimate(_teacher_student_terms)
realworld = _estimate(_realworld_terms)


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
        terms = getattr(hook, "terms", None)
        largest = ""
        if terms is not None:
            what, size = max(terms(configs[name]).items(), key=lambda kv: kv[1])
            largest = f"; largest: {what}, {format_bytes(size)}"
        label = f"{getattr(experiment, 'NAME', '')} {name}".strip()
        raise ValueError(
            f"{label} refused before computing: its arrays need at least {format_bytes(need)}, more than the "
            f"{format_bytes(available)} of memory available{largest}"
        )
