"""Tables and figures over the store (docs/design.md: report reads the store and knows experiments only
through the registry): :mod:`.document` assembles the report, one section module per experiment."""

from .document import SECTIONS, collect, html_report, markdown, write

__all__ = ["SECTIONS", "collect", "html_report", "markdown", "write"]
