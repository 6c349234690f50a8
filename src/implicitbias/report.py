"""Reports over the store. Generic: it never names an experiment.

Each experiment module provides ``report_rows(runs) -> list[dict]`` (JSON-ready rows) and may
provide ``report_markdown(rows, out_dir) -> str``: its Markdown section (it may write figures
under ``out_dir`` and link them relative to it). Without it a plain table of the rows is printed.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

from . import experiments
from .store import Store


def collect(store: Store) -> list[dict]:
    """All report rows of every registered experiment with stored runs."""
    rows: list[dict] = []
    for name, exp in experiments.EXPERIMENTS.items():
        runs = list(store.runs(name))
        if runs and hasattr(exp, "report_rows"):
            rows.extend(exp.report_rows(runs))
    return rows


def fmt(x) -> str:
    """A number in 3 significant digits, '-' for None."""
    if x is None:
        return "-"
    if isinstance(x, bool) or isinstance(x, int):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.3e}"


def _generic_table(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k != "experiment" and not isinstance(rows[0][k], (list, dict))]
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(k)) if isinstance(r.get(k), float) else str(r.get(k)) for k in keys) + " |")
    return "\n".join(out) + "\n"


def markdown(rows: list[dict], out_dir: Path | None = None) -> str:
    """One section per experiment with rows, in registry order."""
    if not rows:
        return "No stored runs yet: try `implicitbias run table1`.\n"
    out_dir = Path(out_dir) if out_dir is not None else Path("runs")
    out = ["# implicitbias report\n"]
    for name, exp in experiments.EXPERIMENTS.items():
        mine = [r for r in rows if r["experiment"] == name]
        if not mine:
            continue
        out.append(f"## {name}\n")
        if hasattr(exp, "report_markdown"):
            out.append(exp.report_markdown(mine, out_dir))
        else:
            out.append(_generic_table(mine))
    return "\n".join(out)


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
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest)
                        + "</table>")
            continue
        m = re.match(r"^(#+)\s+(.*)$", line)
        if m:
            n = len(m.group(1))
            body.append(f"<h{n}>{html.escape(m.group(2))}</h{n}>")
        elif line.strip():
            body.append("<p>" + _inline_images(html.escape(line), base) + "</p>")
        i += 1
    return ("<!doctype html><html><head><meta charset='utf-8'><title>implicitbias report</title><style>"
            "body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse;font-size:0.85em}"
            "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _inline_images(text: str, base: Path) -> str:
    def repl(m):
        alt, path = m.group(1), m.group(2)
        f = base / html.unescape(path)
        if not f.exists():
            return f"[missing image {path}]"
        data = base64.b64encode(f.read_bytes()).decode()
        return f"<img alt='{alt}' src='data:image/png;base64,{data}'/>"
    return re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", repl, text)
