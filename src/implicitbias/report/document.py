"""The report document: rows of every stored run, figures, Markdown and a self-contained HTML page.

Generic over experiments: each has a section module here (``SECTIONS``, the :class:`Section`
protocol) with ``rows(runs)`` (JSON-ready rows), ``figures(runs, rows, fig_dir)`` (the PNG files it
wrote, possibly none), ``markdown(rows, out_dir)`` and ``summary(rows)`` (its line of the summary
table the report opens with: claim, ours, theirs, verdict). An experiment without a section gets a
plain table of its stored metrics and a summary line without a verdict.
Drawing and rendering are separate steps: :func:`write` has each section write its PNGs first;
:func:`markdown` only links those that exist. Every file is written atomically (a failed write, e.g.
on a full disk, leaves the previous report as it was and raises a one-line
:class:`~implicitbias.runtime.store.StoreError`). The HTML page is the Markdown rendered by markdown-it-py
(CommonMark plus tables), its images inlined, with a navigation bar and its own stylesheet (no
fonts, scripts or styles from the network).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from markdown_it import MarkdownIt

from .. import experiments
from ..runtime.store import Store, StoreError, atomic_write
from . import chains, defense, dynamics, equations, gc_vs_gd, knockout, realworld, table1
from .common import NOT_JUDGED, VERDICTS, Summary, fmt


@runtime_checkable
class Section(Protocol):
    NAME: str

    def rows(self, runs) -> list[dict]: ...

    def figures(self, runs, rows: list[dict], fig_dir: Path) -> list[Path]: ...

    def markdown(self, rows: list[dict], out_dir: Path) -> str: ...

    def summary(self, rows: list[dict]) -> Summary: ...


SECTIONS: dict[str, Section] = {m.NAME: m for m in (table1, dynamics, chains, realworld, gc_vs_gd, defense, knockout,
                                                  equations)}


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


SUMMARY_HEADING = "Summary"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: ``|`` and ``*`` escaped, so it shows as written."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def summaries(rows: list[dict]) -> dict[str, Summary]:
    """Each experiment's summary line (registry order), from its section's ``summary``; an experiment
    without a section gets its run count and no verdict."""
    out = {}
    for name in experiments.EXPERIMENTS:
        mine = [r for r in rows if r["experiment"] == name]
        if not mine:
            continue
        section = SECTIONS.get(name)
        out[name] = (section.summary(mine) if section else
                     Summary("-", f"{len(mine)} stored runs", "-", NOT_JUDGED, "no report section of its own"))
    return out


def summary_markdown(rows: list[dict]) -> str:
    """The table the report opens with: per experiment the claim, ours, theirs, the verdict and how
    it was reached, the experiment's name linking to its section."""
    out = [
        f"## {SUMMARY_HEADING}\n",
        "| experiment | claim | ours | paper / authors' | verdict | how judged |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summaries(rows).items():
        out.append(f"| [{name}](#{_slug(name)}) | {_cell(s.claim)} | {_cell(s.ours)} | {_cell(s.theirs)} | "
                   f"**{s.verdict}** | {_cell(s.why)} |")
    out.append(
        "\nOne line per experiment in this store. *Ours*: the numbers of the stored runs; *paper / authors'*: "
        "the paper's (or the talk's, the authors' code's) numbers where they give one, `-` where not; "
        "*verdict*: the rule each section's tables already apply, counted over what is stored (holds: every "
        "judged cell; fails: none; partial: some; not judged: nothing to judge). Runs marked \\* carry "
        "overrides of their preset (fewer seeds, a smaller budget...): their verdict judges those runs, not "
        "the preset's defaults. Every table and figure follows, one section per experiment.\n"
    )
    return "\n".join(out) + "\n"


def markdown(rows: list[dict], out_dir: Path | None = None) -> str:
    """The summary table, then one section per experiment with rows, in registry order; figures under
    ``out_dir`` are linked."""
    if not rows:
        return "No stored runs yet: try `implicitbias run table1`.\n"
    out_dir = Path(out_dir) if out_dir is not None else Path("runs")
    out = ["# implicitbias report\n", summary_markdown(rows)]
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
    (:func:`implicitbias.runtime.store.atomic_write`)."""
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


CSS = """
:root{--fg:rgb(31,35,40);--muted:rgb(89,99,110);--line:#d1d9e0;--soft:#f6f8fa;--link:rgb(9,105,218)}
*{box-sizing:border-box}
html{scroll-padding-top:56px}
body{margin:0;color:var(--fg);background:#fff;
 font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans",
 "DejaVu Sans",sans-serif}
nav{position:sticky;top:0;z-index:5;display:flex;flex-wrap:wrap;gap:2px 4px;align-items:center;
 padding:8px 24px;background:rgba(255,255,255,.97);border-bottom:1px solid var(--line);font-size:14px}
nav b{margin-right:10px}
nav a{color:var(--link);text-decoration:none;padding:2px 8px;border-radius:6px}
nav a:hover{background:var(--soft)}
main{max-width:1400px;margin:0 auto;padding:4px 24px 48px}
h1{font-size:24px;margin:14px 0 0}
h2{font-size:21px;margin:32px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:17px;margin:26px 0 8px}
p{margin:8px 0;max-width:1150px}
a{color:var(--link)}
.wide{overflow-x:auto;width:fit-content;max-width:100%;margin:10px 0 14px;
 border:1px solid var(--line);border-radius:6px}
.wide:has(table.summary){width:auto}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th{background:var(--soft);text-align:left;font-weight:600;vertical-align:bottom}
td,th{padding:5px 10px;border-bottom:1px solid var(--line);vertical-align:top}
td+td,th+th{border-left:1px solid #eaeef2}
tbody tr:nth-child(even){background:#fbfcfd}
tbody tr:last-child td{border-bottom:0}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono","DejaVu Sans Mono",monospace;
 background:var(--soft);padding:1px 4px;border-radius:4px}
img{max-width:100%;height:auto;margin:6px 0;border:1px solid var(--line);border-radius:6px}
table.summary{width:100%;font-size:14px}
table.summary td:first-child{font-weight:600;white-space:nowrap}
table.summary td:nth-child(2){width:24%}
table.summary td:nth-child(3){width:30%}
table.summary td:nth-child(6){width:20%;color:var(--muted);font-size:13px}
td.verdict{white-space:nowrap;text-align:center}
.wide:has(table.summary)+p{font-size:13px;color:var(--muted)}
td.v-holds{background:#dafbe1;color:rgb(17,99,41)}
td.v-fails{background:#ffebe9;color:#a40e26}
td.v-partial{background:#fff8c5;color:rgb(125,78,0)}
td.v-not-judged{background:var(--soft);color:var(--muted)}
"""


def _slug(text: str) -> str:
    """A heading's anchor as GitHub makes it (lower case; characters other than letters, digits, ``-``,
    ``_`` and spaces dropped; spaces made ``-``), so a link works in report.md and report.html alike."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def html_report(md: str, base: Path) -> str:
    """A self-contained HTML page of the Markdown ``md`` (CommonMark and tables, raw HTML escaped),
    PNG images linked as ``![alt](path)`` inlined as base64 (paths relative to ``base``; one that does
    not exist shows as ``[missing image path]``). Level-2 and -3 headings get GitHub's anchors and
    the level-2 ones a navigation bar; the table after the summary heading is styled as the summary,
    its verdict cells coloured; every table scrolls sideways inside its own box when too wide."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(md)
    nav, seen, in_summary = [], {}, False
    for i, token in enumerate(tokens):
        for child in token.children or []:
            if child.type == "image":
                _inline_image(child, Path(base))
        if token.type == "heading_open" and token.tag in ("h2", "h3"):
            title = tokens[i + 1].content
            slug = _slug(title)
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            slug = slug if n == 0 else f"{slug}-{n}"
            token.attrSet("id", slug)
            if token.tag == "h2":
                nav.append((slug, title))
                in_summary = title == SUMMARY_HEADING
        elif in_summary and token.type == "table_open":
            token.attrSet("class", "summary")
        elif in_summary and token.type == "td_open":
            word = tokens[i + 1].content.strip("*")
            if word in VERDICTS:
                token.attrSet("class", f"verdict v-{word.replace(' ', '-')}")
        elif token.type == "table_close":
            in_summary = False
    body = parser.renderer.render(tokens, parser.options, {})
    body = body.replace("<table", '<div class="wide"><table').replace("</table>", "</table></div>")
    links = "".join(f'<a href="#{slug}">{html.escape(title)}</a>' for slug, title in nav)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>implicitbias report</title><style>{CSS}</style></head><body>\n"
        + (f"<nav><b>implicitbias report</b>{links}</nav>\n" if nav else "")
        + "<main>\n" + body + "</main></body></html>\n"
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
