"""The report document: rows of every stored run, figures, Markdown and a self-contained HTML page.

Generic over experiments: each has a section module here (``SECTIONS``, the :class:`Section`
protocol) with ``rows(runs)`` (JSON-ready rows), ``figures(runs, rows, fig_dir)`` (the PNG files it
wrote, possibly none) and ``markdown(rows, out_dir)``. An experiment without a section gets a plain
table of its stored metrics.
Drawing and rendering are separate steps: :func:`write` has each section write its PNGs first;
:func:`markdown` only links those that exist. Every file is written atomically (a failed write, e.g.
on a full disk, leaves the previous report as it was and raises a one-line
:class:`~implicitbias.store.StoreError`).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from .. import experiments
from ..store import Store, StoreError, atomic_write
from . import chains, dynamics, realworld, table1
from .common import fmt


@runtime_checkable
class Section(Protocol):
    NAME: str

    def rows(self, runs) -> list[dict]: ...

    def figures(self, runs, rows: list[dict], fig_dir: Path) -> list[Path]: ...

    def markdown(self, rows: list[dict], out_dir: Path) -> str: ...


SECTIONS: dict[str, Section] = {m.NAME: m for m in (table1, dynamics, chains, realworld)}


def _generic_rows(name: str, runs) -> list[dict]:
    return [{"experiment": name, "preset": r.preset or "custom",
             **{k: v for k, v in r.metrics.items() if isinstance(v, (int, float, str, bool))}} for r in runs]


def _stored(store: Store):
    """``(name, section or None, runs, rows)`` of every registered experiment with stored runs."""
    for name in experiments.EXPERIMENTS:
        runs = list(store.runs(name))
        if runs:
            section = SECTIONS.get(name)
            yield name, section, runs, (section.rows(runs) if section else _generic_rows(name, runs))


def collect(store: Store) -> list[dict]:
    """All report rows of every registered experiment with stored runs, in registry order."""
    return [row for *_, rows in _stored(store) for row in rows]


def figure_dir(out_dir: Path, name: str) -> Path:
    """Where an experiment's figures go: ``out_dir/figures/<name>``."""
    return Path(out_dir) / "figures" / name


def _generic_table(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k != "experiment" and not isinstance(rows[0][k], (list, dict))]
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append(
            "| " + " | ".join(fmt(r.get(k)) if isinstance(r.get(k), float) else str(r.get(k)) for k in keys) + " |"
        )
    return "\n".join(out) + "\n"


def markdown(rows: list[dict], out_dir: Path | None = None) -> str:
    """One section per experiment with rows, in registry order; figures under ``out_dir`` are linked."""
    if not rows:
        return "No stored runs yet: try `implicitbias run table1`.\n"
    out_dir = Path(out_dir) if out_dir is not None else Path("runs")
    out = ["# implicitbias report\n"]
    for name in experiments.EXPERIMENTS:
        mine = [r for r in rows if r["experiment"] == name]
        if not mine:
            continue
        out.append(f"## {name}\n")
        section = SECTIONS.get(name)
        out.append(section.markdown(mine, out_dir) if section else _generic_table(mine))
    return "\n".join(out)


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place: a reader (or a full
    disk) never sees a half-written file, and the previous version survives a failed write
    (:func:`implicitbias.store.atomic_write`)."""
    atomic_write(path, text)


def write(store: Store, out_dir: Path) -> tuple[str, list[Path]]:
    """Figures, then ``report.md`` and ``report.html`` under ``out_dir`` (rows computed once). Returns
    the Markdown text and the paths of the two documents."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError.of(out_dir, e) from None
    rows: list[dict] = []
    for name, section, runs, mine in _stored(store):
        if section is not None:
            section.figures(runs, mine, figure_dir(out_dir, name))
        rows += mine
    text = markdown(rows, out_dir)
    md, page = out_dir / "report.md", out_dir / "report.html"
    write_atomic(md, text)
    write_atomic(page, html_report(text, out_dir))
    return text, [md, page]


def html_report(md: str, base: Path) -> str:
    """A self-contained HTML page: Markdown tables and headings rendered minimally, PNG images
    linked as ``![alt](path)`` inlined as base64 (paths relative to ``base``)."""
    body = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            table = []
            while i < len(lines) and lines[i].startswith("|"):
                table.append(lines[i])
                i += 1
            cells = [[c.strip() for c in t.strip("|").split("|")] for t in table]
            head, rest = cells[0], [c for c in cells[1:] if not all(set(x) <= set("-: ") for x in c)]
            body.append(
                "<table><tr>"
                + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest)
                + "</table>"
            )
            continue
        m = re.match(r"^(#+)\s+(.*)$", line)
        if m:
            n = len(m.group(1))
            body.append(f"<h{n}>{html.escape(m.group(2))}</h{n}>")
        elif line.strip():
            body.append("<p>" + _inline_images(html.escape(line), base) + "</p>")
        i += 1
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>implicitbias report</title><style>"
        "body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse;font-size:0.85em}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _inline_images(text: str, base: Path) -> str:
    def repl(m):
        alt, path = m.group(1), m.group(2)
        f = base / html.unescape(path)
        if not f.exists():
            return f"[missing image {path}]"
        data = base64.b64encode(f.read_bytes()).decode()
        return f"<img alt='{alt}' src='data:image/png;base64,{data}'/>"

    return re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", repl, text)
