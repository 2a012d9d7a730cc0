"""The deployed card path, standalone, for tests and the bench.

:class:`terminal_fw.tap.TapRunner` built as the runtime builds it (intent journal in the
outbox's file, the tests' chain keys and catalogue through a config document), without
the runtime around it, so a test can tap simulated cards on any reader path and look at
the card, the outbox and the journal afterwards. :func:`personalise` makes member cards
the same way, at a service desk whose stores live in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.card_ops import add_visits, issue, open_account, sell_pass, take_visit
from protocol.mifare import MifareClassicLink
from protocol.terminal_config import parse_config
from terminal_fw.identity import DeviceIdentity, load_or_create
from terminal_fw.outbox import Outbox
from terminal_fw.tap import IntentJournal, TapResult, TapRunner
from tests.card_world import KEYS, T0


def _config_doc(version: int = 1, **changes: Any) -> dict[str, Any]:
    from tests.runtime_world import config_doc

    return config_doc(version, **changes)


def make_runner(folder: Path | None, *, denylist: Collection[str] = frozenset(),
                offline: Callable[[], bool] = lambda: False,
                clock: Callable[[], float] = lambda: T0 / 1000,
                accepts: tuple[str, ...] = (), device_id: str = "gate-01",
                operator: str = "", gate_group: int = 0) -> TapRunner:
    """A gate's tap runner: gate group 0 by default (no anti-passback window in the
    tests' catalogue; group 1 has 10 minutes), ``accepts`` empty = any product; identity
    and outbox in ``folder``, or in memory (None)."""
    if folder is None:
        identity = DeviceIdentity(device_id, "store-01", Ed25519PrivateKey.generate())
        outbox = Outbox(":memory:")
    else:
        identity = load_or_create(folder / "secrets", device_id, "store-01")
        outbox = Outbox(folder / "outbox.db")
    config = parse_config(_config_doc(1, gate={"group": gate_group, "accepts": list(accepts)}))
    return TapRunner(identity, outbox, IntentJournal(outbox, clock=clock), KEYS,
                     config=lambda: config, denylist=lambda: denylist,
                     offline=offline, clock=clock, operator=operator)


def tap(runner: TapRunner, link: MifareClassicLink) -> TapResult:
    """One visit at the gate, as the gate role does it: run ``take_visit`` to be served;
    if the gate may open, mark the intent served (the gate opened)."""
    result = runner.run(link, take_visit, serve=True)
    if result.ok:
        runner.served(result)
    return result


def personalise(card: MifareClassicLink, card_id: str = "M00001", card_product: str = "gold", *,
                opening_fen: int | None = 0, visits: tuple[tuple[str, int], ...] = (),
                pass_name: str = "", now_ms: int = T0) -> MifareClassicLink:
    """Issue ``card`` at a service desk (in memory) through the deployed path: the card
    product, then the purse opened with ``opening_fen`` (None: not opened), then
    ``visits`` as (count product, packages), then a time pass (paid at the counter)."""
    desk = make_runner(None, device_id="desk-01", clock=lambda: now_ms / 1000, operator="op1")
    steps: list[tuple[Any, tuple, dict]] = [
        (issue, (), {"card_id": card_id, "card_product": card_product})]
    if opening_fen is not None:
        steps.append((open_account, (opening_fen,), {}))
    steps += [(add_visits, (product, packages), {}) for product, packages in visits]
    if pass_name:
        steps.append((sell_pass, (pass_name,), {}))
    for op, args, kwargs in steps:
        result = desk.run(card, op, *args, **kwargs)
        assert result.ok, f"{op.__name__}: {result.reason}"
    desk.close()
    desk.outbox.close()
    return card
