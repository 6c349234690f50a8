"""The ``implicitbias`` command (docs/design.md, "Command line"): ``commands`` defines it (a Typer
app), ``help`` its long help texts."""

from .commands import app, main

__all__ = ["app", "main"]
