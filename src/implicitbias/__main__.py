"""``python -m implicitbias`` = the ``implicitbias`` command (for environments without the console script)."""

from .cli import main

main()
