"""What every report section shares: number formatting, the latest stored run per config,
overrides against a preset, special-sequence partners, one way to draw and save a figure, and the
summary line (:class:`Summary`) every section gives the report's opening table."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..runtime.overrides import base_preset, overrides_against
from ..runtime.store import StoredRun, StoreError, atomic_write


def fmt(x) -> str:
    """A number in 4 significant digits (``1.234e-02``), ``-`` for None, ints and bools as they are."""
    if x is None:
        return "-"
    if isinstance(x, (bool, int)):
        return str(x)
    return f"{x:.3e}" if abs(x) < float("inf") else str(x)


def latest_runs(runs: Iterable[StoredRun]) -> list[StoredRun]:
    """The latest stored run of each config (runs come oldest first; one directory per config hash)."""
    latest: dict[str, StoredRun] = {}
    for r in runs:
        latest[r.path.name] = r
    return list(latest.values())


def preset_overrides(run: StoredRun, presets: dict) -> dict:
    """The fields of ``run``'s config that differ from the preset its name starts from (a sweep
    point's swept values included); ``{}`` for a run of no known preset."""
    base = presets.get(base_preset(run.preset or ""))
    return {} if base is None else overrides_against(run.config, base)


def special_partner_key(preset: str, overrides: dict) -> tuple[str, str]:
    """Rows with equal keys are one cell without and with special sequences: the preset name with
    its sweep label and ``/special`` removed, and the overrides (sweep values included)."""
    return base_preset(preset).removesuffix("/special"), repr(sorted(overrides.items()))


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` (folders made; atomically, so a failed write keeps the
    previous figure), close it, return ``path``. Raises :class:`~implicitbias.runtime.store.StoreError`."""
    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError.of(path.parent, e) from None
    atomic_write(path, buf.getvalue())
    return path


def figure_link(out_dir: Path, path: Path, alt: str) -> str:
    """A Markdown image line for ``path`` (relative to ``out_dir``); empty if it was not written."""
    path = Path(path)
    return f"![{alt}]({path.relative_to(out_dir).as_posix()})" if path.exists() else ""


# The summary's verdicts (``document.summary_markdown``): every section judges its claim by a rule its
# own tables already show (an ordering, a pass count, a Holm-corrected test); none adds a threshold.
HOLDS, FAILS, PARTIAL, NOT_JUDGED = "holds", "fails", "partial", "not judged"
VERDICTS = (HOLDS, FAILS, PARTIAL, NOT_JUDGED)


@dataclass(frozen=True)
class Summary:
    """One experiment's line of the report's summary: the claim in one line, our number(s), the
    paper's or the authors' where known (``-`` where not), the verdict (one of :data:`VERDICTS`)
    and the rule behind it, with counts (``why``)."""

    claim: str
    ours: str
    theirs: str
    verdict: str
    why: str


def tally(results: Iterable[bool | None]) -> tuple[str, int, int]:
    """``(verdict, holding, judged)`` over per-cell results (``None``: that cell was not judged):
    every judged cell holds -> holds, none -> fails, some -> partial, no judged cell -> not judged."""
    judged = [bool(r) for r in results if r is not None]
    held = sum(judged)
    if not judged:
        return NOT_JUDGED, 0, 0
    return (HOLDS if held == len(judged) else FAILS if held == 0 else PARTIAL), held, len(judged)


def listing(items: list[str], limit: int = 5) -> str:
    """``a; b; c`` with at most ``limit`` items, then ``(+n more in the section)``; ``-`` if empty."""
    if not items:
        return "-"
    more = len(items) - limit
    return "; ".join(items[:limit]) + (f"; (+{more} more in the section)" if more > 0 else "")


def g3(x) -> str:
    """A number in 3 significant digits (``0.0123``, ``1.2e+03``), ``-`` for None or NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.3g}"


def fixed(x, digits: int = 1) -> str:
    """``x`` with ``digits`` decimals (``12.3``), ``-`` for None."""
    return "-" if x is None else f"{x:.{digits}f}"


def mean_pm(mean, sd, digits: int = 1) -> str:
    """``mean ± sd`` with ``digits`` decimals each, ``-`` for a missing mean."""
    return "-" if mean is None else f"{mean:.{digits}f} ± {fixed(sd, digits)}"


def mean_ci(row: dict, key: str, scale: float = 1.0, digits: int = 3) -> str:
    """``row[key_mean] ± row[key_ci]`` (the 95% half-width), both times ``scale``; the mean alone when
    the interval is missing or not finite (one seed); ``-`` without a mean."""
    mean, ci = row.get(f"{key}_mean"), row.get(f"{key}_ci")
    if mean is None:
        return "-"
    if ci is None or not math.isfinite(ci):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {ci * scale:.{digits}f}"


def points_ci(row: dict, key: str) -> str:
    """A paired difference in percentage points, signed, with its 95% half-width: ``+1.23 ± 0.45``."""
    m, h = row.get(f"{key}_mean"), row.get(f"{key}_ci")
    if m is None:
        return "-"
    return f"{100 * m:+.2f} ± {100 * h:.2f}" if h is not None and math.isfinite(h) else f"{100 * m:+.2f}"


def points_ci_holm(row: dict, key: str) -> str:
    """:func:`points_ci` with the Holm-adjusted p-value ``row[key_p_holm]`` when there is one."""
    p = row.get(f"{key}_p_holm")
    return points_ci(row, key) + (f" (p {p:.2g})" if p is not None and math.isfinite(p) else "")
