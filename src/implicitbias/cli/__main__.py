"""``python -m implicitbias.cli``: the ``implicitbias`` command."""

from .commands import main

main()
