"""The report document: rows of every stored run, figures, Markdown and a self-contained HTML page.

Generic over experiments: each has a section module here (``SECTIONS``, the :class:`Section`
protocol) with ``rows(runs)`` (JSON-ready rows), ``figures(runs, rows, fig_dir)`` (the PNG files it
wrote, possibly none) and ``markdown(rows, out_dir)``. An experiment without a section gets a plain
table of its stored metrics.
Drawing and rendering are separate steps: :func:`write` has each section write its PNGs first;
:func:`markdown` only links those that exist. Every file is written atomically (a failed write, e.g.
on a full disk, leaves the previous report as it was and raises a one-line
:class:`~implicitbias.store.StoreError`). The HTML page is the Markdown rendered by markdown-it-py
(CommonMark plus tables), its images inlined.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Protocol, runtime_checkable

from markdown_it import MarkdownIt

from .. import experiments
from ..store import Store, StoreError, atomic_write
from . import chains, defense, dynamics, gc_vs_gd, realworld, table1
from .common import fmt


@runtime_checkable
class Section(Protocol):
    NAME: str

    def rows(self, runs) -> list[dict]: ...

    def figures(self, runs, rows: list[dict], fig_dir: Path) -> list[Path]: ...

    def markdown(self, rows: list[dict], out_dir: Path) -> str: ...


SECTIONS: dict[str, Section] = {m.NAME: m for m in (table1, dynamics, chains, realworld, gc_vs_gd, defense)}


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
    """A self-contained HTML page of the Markdown ``md`` (CommonMark and tables, raw HTML escaped),
    PNG images linked as ``![alt](path)`` inlined as base64 (paths relative to ``base``; one that does
    not exist shows as ``[missing image path]``)."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(md)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                _inline_image(child, Path(base))
    body = parser.renderer.render(tokens, parser.options, {})
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>implicitbias report</title><style>"
        "body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse;font-size:0.85em}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
        "code{background:#f4f4f4;padding:0 2px}</style></head><body>\n"
        + body
        + "</body></html>\n"
    )


def _inline_image(token, base: Path) -> None:
    """Point an image token at its PNG as a ``data:`` URI, or turn it into ``[missing image path]``."""
    path = str(token.attrGet("src") or "")
    f = base / path
    if path.startswith(("data:", "http:", "https:")):
        return
    if not f.is_file():
        token.type, token.tag, token.nesting, token.children = "text", "", 0, None
        token.content = f"[missing image {path}]"
        token.attrs = {}
        return
    token.attrSet("src", "data:image/png;base64," + base64.b64encode(f.read_bytes()).decode())
