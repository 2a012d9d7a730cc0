"""``python -m onecard.cli``: the ``onecard`` command (tests and the demo start it so)."""

from onecard.cli import main

main()
