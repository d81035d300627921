"""``python -m hoptrace``: the same as the ``hoptrace`` command."""

from hoptrace.cli import main

main()
