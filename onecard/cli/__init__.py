"""``onecard``: one command for HQ, terminals, the broker, simulators and the demo.

A thin layer over the library (sqlite-utils is the model): a command parses its
options, calls the library function the demo and the tests call too, and prints what
it returns. One module per command group:

* ``command_line.py`` — the top-level group and its error guard (one line, exit 1, for a
  database, broker or file that is not usable; ``--verbose`` shows the traceback)
* ``options.py`` — option types and options the groups share (bounded numbers, dates,
  ``--db``, ``--site``)
* ``hq/`` — ``onecard hq``: running HQ, the ledger, cards, devices, catalogue, operators
* ``terminal.py``, ``sim.py``, ``broker.py``, ``demo.py`` — the other groups

The entry point is :func:`main` (``onecard.cli:main`` in pyproject.toml).
"""

from onecard.cli import broker, demo, hq, sim, terminal
from onecard.cli.command_line import CommandLine, main

for _part in (hq.group, terminal.group, sim.group, broker.group, demo.command):
    main.add_command(_part)

__all__ = ["CommandLine", "main"]
