"""Compare two run stores preset by preset: every stored metric and array must be identical.

Used to check that a refactor changes no number: run the same presets into two stores (before and
after), then ``python scripts/compare_stores.py OLD NEW [experiment ...]`` (default: every experiment
either store holds). Timing fields (``*_seconds``, ``*_s``, ``*_per_second``, also inside nested
dicts) are skipped; metrics only one side has are listed.
Exit 1 if any shared number differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np



def _is_timing(key: str) -> bool:
    return key.endswith(("seconds", "_s", "per_second"))


def _without_timing(value):
    """``value`` with every timing entry of its (nested) dicts removed: wall times and rates measured
    with them (``gc_samples_per_second``) differ from run to run; every other number must not."""
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if not _is_timing(k)}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _by_preset(root: Path, experiment: str) -> dict[str, Path]:
    out = {}
    for d in sorted((root / experiment).iterdir()) if (root / experiment).is_dir() else []:
        if d.is_dir() and not d.name.startswith(".") and (d / "metrics.json").exists():
            out[json.loads((d / "config.json").read_text())["preset"]] = d
    return out


def compare(old: Path, new: Path, experiment: str) -> tuple[int, int]:
    a, b = _by_preset(old, experiment), _by_preset(new, experiment)
    same = differ = 0
    for preset in sorted(set(a) | set(b)):
        if preset not in a or preset not in b:
            print(f"{experiment}/{preset}: only in {'old' if preset in a else 'new'}")
            differ += 1
            continue
        ma, mb = (json.loads((s[preset] / "metrics.json").read_text()) for s in (a, b))
        bad = [k for k in set(ma) & set(mb) if not _is_timing(k) and _without_timing(ma[k]) != _without_timing(mb[k])]
        with np.load(a[preset] / "arrays.npz") as xa, np.load(b[preset] / "arrays.npz") as xb:
            bad += [f"arrays.{k}" for k in set(xa.files) | set(xb.files)
                    if k not in xa.files or k not in xb.files or not np.array_equal(xa[k], xb[k], equal_nan=True)]
        extra = sorted(k for k in set(ma) ^ set(mb) if not _is_timing(k))
        if bad:
            differ += 1
            print(f"{experiment}/{preset}: DIFFERS in {', '.join(sorted(bad))}")
        else:
            same += 1
            print(
                f"{experiment}/{preset}: identical"
                + (f" (metrics on one side only: {', '.join(extra)})" if extra else "")
            )
    return same, differ


def main(argv: list[str]) -> int:
    old, new, *experiments = argv
    # default: every experiment either store holds
    experiments = experiments or sorted({d.name for root in (old, new) for d in Path(root).iterdir()
                                         if d.is_dir() and not d.name.startswith(".")})
    totals = [compare(Path(old), Path(new), e) for e in experiments]
    same, differ = sum(t[0] for t in totals), sum(t[1] for t in totals)
    print(f"{same} presets identical, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
