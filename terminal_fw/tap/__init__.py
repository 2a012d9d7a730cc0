"""A card operation at a terminal, crash-safe: the tap runner and its parts.

* :mod:`terminal_fw.tap.runner` — :class:`TapRunner` carries one operation of
  :data:`protocol.card_ops.OPERATIONS` out: read, settle, decide, intent, card, records;
* :mod:`terminal_fw.tap.settle` — the settling rules for a write a power cut or a pulled
  card left unfinished, as pure functions;
* :mod:`terminal_fw.tap.journal` — the intent journal they settle (storage only);
* :mod:`terminal_fw.tap.recorder` — the one place records are signed.
"""

from terminal_fw.tap.journal import Intent, IntentJournal, Status
from terminal_fw.tap.recorder import Recorder
from terminal_fw.tap.runner import TapResult, TapRunner
from terminal_fw.tap.settle import SERVE_GRACE_S, Settlement, Then, settle

__all__ = ["SERVE_GRACE_S", "Intent", "IntentJournal", "Recorder", "Settlement", "Status",
           "TapResult", "TapRunner", "Then", "settle"]
