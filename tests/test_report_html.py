"""The HTML report: its Markdown rendered (code spans, escapes, tables, images), the summary it
opens with (claim, ours, theirs, verdict, a link per experiment), the navigation bar, and a
screenshot in a real headless browser where one is installed (skipped, saying why, where not)."""

import html
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pytest

from implicitbias import report
from implicitbias.experiments import table1
from implicitbias.record import Record
from implicitbias.report import defense as report_defense
from implicitbias.report import gc_vs_gd as report_gc
from implicitbias.report.common import tally
from implicitbias.runtime.store import Store

# a 1x1 PNG
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def test_html_renders_markdown_syntax(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(PNG)
    md = (
        "# report\n\nread at `measure_at`; **Not fitted:** x\n\n\\* overrides of the preset: lr\n\n"
        "| preset | note |\n|---|---|\n| `p0` | 1 < 2 |\n\n![fig](figures/a.png)\n\n![gone](figures/b.png)\n\n"
        "<script>alert(1)</script>\n"
    )
    page = report.html_report(md, tmp_path)
    assert "<code>measure_at</code>" in page and "<strong>Not fitted:</strong>" in page
    assert "`" not in page and "\\*" not in page and "* overrides of the preset" in page
    assert "<td><code>p0</code></td>" in page and "<td>1 &lt; 2</td>" in page and "<h1>report</h1>" in page
    assert page.count("data:image/png;base64,") == 1 and "[missing image figures/b.png]" in page
    assert "<script>" not in page  # raw HTML in the Markdown is shown, not run


def test_written_report_has_code_not_backticks(tmp_path):
    store = Store(tmp_path)
    cfg = replace(table1.PRESETS["beyond_theorem/L6"], seeds=(200,))
    store.save("table1", cfg, Record({"error_mean": 1.0, "error_std": 0.0, "error": [1.0], "seeds": [200]},
                                     {"x": np.zeros(2)}), preset="beyond_theorem/L6", wall_seconds=0.0)
    text, (_, page) = report.write(store, tmp_path)
    spans = re.findall(r"`([^`]+)`", text)
    assert spans  # the table's note names fields as code
    page = page.read_text()
    assert all(f"<code>{html.escape(s, quote=False)}</code>" in page for s in spans)
    assert "`" not in page and "\\*" not in page


def _table1_store(root) -> Store:
    """Two Table 1 cell pairs of one seed each: beyond_theorem/L6 where special sequences raise the
    error (the ordering holds), per_theorem/L7 where they lower it (it fails): the summary's verdict
    is 'partial'."""
    store = Store(root)
    for preset, error in (("beyond_theorem/L6", 0.2), ("beyond_theorem/L6/special", 16.0),
                          ("per_theorem/L7", 0.05), ("per_theorem/L7/special", 0.001)):
        cfg = replace(table1.PRESETS[preset], seeds=(200,))
        store.save("table1", cfg, Record({"error_mean": error, "error_std": 0.0, "error": [error], "seeds": [200]},
                                         {"x": np.zeros(2)}), preset=preset, wall_seconds=0.0)
    return store


class _Page(HTMLParser):
    """What the tests read of a report page: ids, nav links, headings, the summary table's cells
    (text and class), every table, resources from elsewhere, and the visible text."""

    def __init__(self):
        super().__init__()
        self.ids, self.nav_links, self.h2 = [], [], []
        self.summary_rows, self.tables, self.external, self.text = [], 0, [], []
        self._stack, self._in_summary, self._cell = [], False, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._stack.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a" and "nav" in self._stack:
            self.nav_links.append(a.get("href"))
        if tag == "h2":
            self.h2.append(a.get("id"))
        if tag in ("script", "link", "iframe") or (a.get("src") or "").startswith(("http:", "https:", "//")):
            self.external.append(tag)
        if tag == "table":
            self.tables += 1
            self._in_summary = a.get("class") == "summary"
        if self._in_summary and tag == "tr":
            self.summary_rows.append([])
        if self._in_summary and tag == "td":
            self._cell = {"class": a.get("class"), "text": "", "href": None}
            self.summary_rows[-1].append(self._cell)
        if self._cell is not None and tag == "a":
            self._cell["href"] = a.get("href")

    def handle_endtag(self, tag):
        while self._stack and self._stack.pop() != tag:
            pass
        if tag == "td":
            self._cell = None
        if tag == "table":
            self._in_summary = False

    def handle_data(self, data):
        if "style" not in self._stack:
            self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data


def test_report_opens_with_summary_and_navigation(tmp_path):
    store = _table1_store(tmp_path)
    text, (md, page_path) = report.write(store, tmp_path)
    page = _Page()
    page.feed(page_path.read_text())
    # the summary comes first, the experiments' sections after it, and the nav bar links to each
    assert page.h2[0] == "summary" and "table1" in page.h2
    assert page.nav_links == [f"#{i}" for i in page.h2]
    assert all(link[1:] in page.ids for link in page.nav_links)
    rows = [r for r in page.summary_rows if r]  # the header row has th cells only
    assert len(rows) == 1
    experiment, claim, ours, theirs, verdict, why = rows[0]
    assert experiment["text"] == "table1" and experiment["href"] == "#table1"
    assert claim["text"] == report.SECTIONS["table1"].CLAIM
    assert "beyond_theorem/L6 * 80x" in ours["text"] and "per_theorem/L7 * 0.02x" in ours["text"]
    assert "paper 85.6x" in theirs["text"]  # the paper's 16.61 / 0.194, for beyond_theorem/L6
    assert verdict["text"] == "partial" and verdict["class"] == "verdict v-partial"
    assert "1 of 2 cell pairs" in why["text"]
    # every table of the section still follows the summary; nothing is loaded from elsewhere
    assert page.tables == 2 and not page.external
    assert text.index("## Summary") < text.index("## table1") and "[table1](#table1)" in text
    shown = "".join(page.text) + md.read_text()
    assert not re.search(r"issue|#\d", shown, re.IGNORECASE)  # no issue numbers in the report's text


def test_summary_verdicts_count_what_is_stored():
    assert tally([True, True, None]) == ("holds", 2, 2)
    assert tally([True, False]) == ("partial", 1, 2)
    assert tally([False]) == ("fails", 0, 1)
    assert tally([None]) == ("not judged", 0, 0)
    point = {"sweep": "width", "overrides": {}, "depth": 2, "chance": 0.24}
    gc = [{**point, "width": 5, "gc_error": 0.12, "gd_error": 0.001},
          {**point, "width": 160, "gc_error": 0.26, "gd_error": 0.03}]
    s = report_gc.summary(gc)
    assert s.verdict == "holds" and "3 of 3" in s.why and "0.12 → 0.26" in s.ours and s.theirs == "-"
    gc[1]["gc_error"] = 0.1  # G&C better at the wider end: the trend fails, GD is still below G&C
    assert report_gc.summary(gc).verdict == "partial"
    assert report_gc.summary([{**gc[0], "gc_error": None}]).verdict == "not judged"
    cell = {"kind": "synthetic", "preset": "synthetic/beyond_L6", "overrides": {}, "seeds": [0, 1],
            "error_clean": [0.2, 0.2], "auroc_mean": 1.0}
    rows = [{**cell, "detector": "nongreedy_share", "error_defended": [0.3, 0.5], "seeds_within_2x_clean": 1},
            {**cell, "detector": "loss", "error_defended": [9.0, 9.0], "seeds_within_2x_clean": 0}]
    s = report_defense.summary(rows)
    assert s.verdict == "partial" and "1 of 2 seeds" in s.why  # only the theory-guided detector is judged


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser():
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


@pytest.mark.skipif(_browser() is None, reason=f"no headless browser installed (looked for {', '.join(BROWSERS)})")
def test_report_screenshot_in_headless_browser(tmp_path):
    """The page as a reader sees it at 1400 px: the nav bar's links and the summary's coloured verdict
    above the fold, on a page that is not blank."""
    from PIL import Image

    _, (_, page) = report.write(_table1_store(tmp_path / "store"), tmp_path / "out")
    png = tmp_path / "report.png"
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900",
           f"--screenshot={png}", page.resolve().as_uri()]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{cmd[0]} took over 90 s to screenshot the report")
    assert png.is_file(), f"{cmd[0]} wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape[1] == 1400 and img.shape[0] >= 600

    def share(region, rgb, tol=12):
        return float(np.mean(np.all(np.abs(region - np.array(rgb)) <= tol, axis=-1)))

    assert share(img[:40], (9, 105, 218), tol=60) > 0.002  # the nav bar's blue links, at the very top
    assert share(img[:500], (255, 248, 197)) > 0.001  # the 'partial' verdict cell, above the fold
    assert 1 - share(img[:500], (255, 255, 255), tol=3) > 0.05  # the top of the page is not empty


def test_table1_summary_judges_the_defaults_and_shows_our_variants_apart():
    """results/table1.json holds the defaults and our float64 variants; float64/ssm_in_nn/L10's ordering
    fails there. The summary's verdict judges the defaults only and names the variant's failure."""
    import json
    from pathlib import Path

    from implicitbias.experiments import table1
    from implicitbias.report import table1 as report_t1

    rows = json.loads((Path(__file__).parents[1] / "results" / "table1.json").read_text())["rows"]
    variant = [r for r in rows if r["preset"] == "float64/ssm_in_nn/L10"][0]
    assert "float64/ssm_in_nn/L10" in table1.VARIANTS and variant["ordering_holds"] is False
    s = report_t1.summary(rows)
    defaults = sum(1 for r in rows if not r["special"] and r["preset"] not in table1.VARIANTS)
    assert s.verdict == "holds" and f"in {defaults} of {defaults} cell pairs" in s.why
    assert "float64/ssm_in_nn/L10" in s.why and "(fails)" in s.why and "float64" not in s.ours
