"""A standalone gate on the deployed MIFARE path, for the card gate tests.

:class:`terminal_fw.intent.CardTransactions` built as the runtime builds it (intent
journal in the outbox's file, the tests' chain keys and catalogue through a config
document), without the runtime around it, so a test can tap simulated cards on any
reader path and look at the card, the outbox and the journal afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

from protocol.card_ops import take_visit
from protocol.mifare import MifareClassicLink
from protocol.terminal_config import parse_config
from terminal_fw.identity import load_or_create
from terminal_fw.intent import CardTransactions, IntentJournal, TxResult
from terminal_fw.outbox import Outbox
from tests.card_world import KEYS, T0
from tests.runtime_world import config_doc


def make_tx(folder: Path, *, denylist: Collection[str] = frozenset(),
            offline: Callable[[], bool] = lambda: False,
            clock: Callable[[], float] = lambda: T0 / 1000,
            accepts: tuple[str, ...] = ()) -> CardTransactions:
    """A gate's card transactions: gate group 0 (no anti-passback window in the tests'
    catalogue), ``accepts`` empty = any product; identity and outbox in ``folder``."""
    identity = load_or_create(folder / "secrets", "gate-01", "store-01")
    outbox = Outbox(folder / "outbox.db")
    config = parse_config(config_doc(1, gate={"group": 0, "accepts": list(accepts)}))
    return CardTransactions(identity, outbox, IntentJournal(outbox, clock=clock), KEYS,
                            config=lambda: config, denylist=lambda: denylist,
                            offline=offline, clock=clock)


def tap(tx: CardTransactions, link: MifareClassicLink) -> TxResult:
    """One visit at the gate, as the runtime's gate role does it: run ``take_visit`` to
    be served; if the gate may open, mark the intent served (the gate opened)."""
    result = tx.run(link, take_visit, serve=True)
    if result.ok:
        tx.served(result)
    return result
