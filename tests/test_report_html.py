"""The HTML report renders its Markdown (issue #15, item 10): code spans, escapes, tables, images."""

import html
import re
from dataclasses import replace

import numpy as np

from implicitbias import report
from implicitbias.experiments import table1
from implicitbias.record import Record
from implicitbias.store import Store

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
