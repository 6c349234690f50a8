"""What every report section shares: number formatting, the latest stored run per config,
overrides against a preset, special-sequence partners, and one way to draw and save a figure."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from ..overrides import base_preset, overrides_against
from ..store import StoredRun, StoreError, atomic_write


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
    previous figure), close it, return ``path``. Raises :class:`~implicitbias.store.StoreError`."""
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
